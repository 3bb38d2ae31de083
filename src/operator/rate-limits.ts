import type { OperatorState } from './live.js';

interface RateLimits {
  agentRpm: number;
  agentTpm: number;
  tenantRpm: number;
  tenantTpm: number;
}

/** The model gateway's rate limits of a tenant: its gateway_* settings, else the global ones, else `base` (the environment's). */
export function operatorRateLimits(state: OperatorState, base: RateLimits): (tenantId: string) => RateLimits {
  return (tenantId) => ({
    agentRpm: state.setting('gateway_agent_rpm', tenantId) ?? base.agentRpm,
    agentTpm: state.setting('gateway_agent_tpm', tenantId) ?? base.agentTpm,
    tenantRpm: state.setting('gateway_tenant_rpm', tenantId) ?? base.tenantRpm,
    tenantTpm: state.setting('gateway_tenant_tpm', tenantId) ?? base.tenantTpm,
  });
}
