import type { Db } from '../db/index.js';
import { safeListener } from '../db/index.js';
import { logger, setZeroTelemetryLookup } from '../telemetry/index.js';
import { listKillSwitches, type KillSwitch } from './kill-switch.js';
import { noteKillSwitches } from './metrics.js';
import { OPERATOR_CHANNEL, SETTINGS, type SettingKey, type SettingValues } from './settings.js';

export interface OperatorStateOptions {
  /** Reload every this many ms even without a NOTIFY (a missed notice, a lost LISTEN connection). Default 5000. */
  pollMs?: number;
  /** Log level to return to when the log_level setting is unset; default the logger's level at start. */
  baseLogLevel?: string;
}

/**
 * One process's view of the runtime settings and kill switches: loaded at start, reloaded on
 * NOTIFY fabric_operator (within a second of a change anywhere) and every `pollMs` as a
 * fallback. Reads are synchronous; this process's own changes apply when `refresh()` resolves.
 */
export class OperatorState {
  private global: SettingValues = {};
  private tenants = new Map<string, SettingValues>();
  private switches: KillSwitch[] = [];
  private timer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private loading: Promise<void> | undefined;
  private again = false;
  private appliedLogLevel: string | undefined;
  private removeLookup: (() => void) | undefined;
  private readonly baseLogLevel: string;

  constructor(
    private readonly db: Db,
    private readonly options: OperatorStateOptions = {},
  ) {
    this.baseLogLevel = options.baseLogLevel ?? logger().level;
  }

  /** Loads the state, then listens and polls. Also makes `zeroTelemetry` the process's zero-telemetry predicate. */
  async start(): Promise<void> {
    await this.refresh();
    this.removeLookup = setZeroTelemetryLookup((tenantId) => this.setting('zero_telemetry', tenantId) === true);
    this.unlisten = await this.db.listen(OPERATOR_CHANNEL, safeListener(OPERATOR_CHANNEL, () => void this.refresh().catch(() => {})), (live) => live && void this.refresh().catch(() => {})).catch((err: unknown) => {
      logger().error({ err }, `operator controls: LISTEN ${OPERATOR_CHANNEL} failed; changes apply within the polling interval`);
      return undefined;
    });
    this.timer = setInterval(() => void this.refresh().catch(() => {}), this.options.pollMs ?? 5000);
    this.timer.unref();
  }

  /** Reloads from the database (coalesced: a call during a load causes one more load after it). */
  refresh(): Promise<void> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.load()
      .catch((err: unknown) => logger().warn({ err }, 'operator controls: reload failed; the last known settings stay in force'))
      .finally(() => {
        this.loading = undefined;
        if (this.again) {
          this.again = false;
          void this.refresh();
        }
      });
    return this.loading;
  }

  private async load(): Promise<void> {
    const [settings, switches] = await Promise.all([
      this.db.query<{ tenant_id: string | null; key: string; value: unknown }>('SELECT tenant_id, key, value FROM runtime_settings'),
      listKillSwitches(this.db),
    ]);
    const global: SettingValues = {};
    const tenants = new Map<string, SettingValues>();
    for (const row of settings.rows) {
      if (!(row.key in SETTINGS)) continue;
      const into = row.tenant_id === null ? global : (tenants.get(row.tenant_id) ?? tenants.set(row.tenant_id, {}).get(row.tenant_id)!);
      (into as Record<string, unknown>)[row.key] = row.value;
    }
    this.global = global;
    this.tenants = tenants;
    this.switches = switches;
    noteKillSwitches(switches);
    this.applyLogLevel();
  }

  /** Sets the process logger's level when the log_level setting changed (unset: back to the configured level). */
  private applyLogLevel(): void {
    const setting = this.global.log_level;
    if (setting === this.appliedLogLevel) return;
    this.appliedLogLevel = setting;
    const level = setting ?? this.baseLogLevel;
    if (logger().level === level) return;
    logger().info({ from: logger().level, to: level }, 'log level changed (runtime setting log_level)');
    logger().level = level;
  }

  /** A setting's value in force for `tenantId`: the tenant's, else the global one, else undefined (use the environment's). */
  setting<K extends SettingKey>(key: K, tenantId?: string): SettingValues[K] | undefined {
    const own = tenantId === undefined ? undefined : this.tenants.get(tenantId)?.[key];
    return own ?? this.global[key];
  }

  /** The kill switch that covers `tenantId` (the global one first), if any. */
  killSwitchFor(tenantId: string): KillSwitch | undefined {
    return this.switches.find((k) => k.tenant_id === null) ?? this.switches.find((k) => k.tenant_id === tenantId);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.removeLookup?.();
    this.timer = undefined;
    const u = this.unlisten;
    this.unlisten = undefined;
    await u?.().catch(() => {});
    await this.loading;
  }
}
