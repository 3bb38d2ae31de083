export { OPERATOR_CHANNEL, SETTINGS, SETTING_KEYS, SettingsPatch, SettingsView, readSettings, updateSettings, type SettingKey, type SettingValues } from './settings.js';
export { EngageBody, KillSwitch, engageKillSwitch, killSwitchRefusal, listKillSwitches, releaseKillSwitch } from './kill-switch.js';
export { OperatorState, type OperatorStateOptions } from './live.js';
export { killSwitchSubmitHook } from './submit-hook.js';
export { operatorRateLimits } from './rate-limits.js';
