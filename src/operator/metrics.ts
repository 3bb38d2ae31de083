import { Gauge } from 'prom-client';
import { registry } from '../telemetry/index.js';
import type { KillSwitch } from './kill-switch.js';

/** The kill switches of the most recently loaded operator view of this process (one per process in practice). */
let engaged: readonly KillSwitch[] = [];

/** Records what the process's view last loaded (OperatorState calls it on every reload). */
export function noteKillSwitches(switches: readonly KillSwitch[]): void {
  engaged = switches;
}

new Gauge({
  name: 'agent_fabric_kill_switches_engaged',
  help: 'Kill switches engaged, as this process last saw them (reloaded within a second of a change): scope global (0 or 1) or tenant (how many tenants).',
  labelNames: ['scope', 'mode'] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const scope of ['global', 'tenant'] as const)
      for (const mode of ['drain', 'stop'] as const) this.set({ scope, mode }, engaged.filter((k) => k.scope === scope && k.mode === mode).length);
  },
});
