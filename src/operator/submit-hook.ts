import type { Principal } from '../auth/index.js';
import type { SubmitHook } from '../queue/index.js';
import { killSwitchRefusal } from './kill-switch.js';
import type { OperatorState } from './live.js';

/**
 * Refuses submits (503 kill_switch_engaged) while a kill switch covers the caller's tenant,
 * before anything is written. It reads the process's live view (a switch engaged on another
 * node is seen within a second); the claim, which reads the table itself, is the guarantee
 * that nothing starts. Put it first in the scheduler's onSubmit.
 */
export function killSwitchSubmitHook(state: OperatorState): SubmitHook {
  const check = (actor: Principal) => {
    const k = state.killSwitchFor(actor.tenantId);
    if (k) throw killSwitchRefusal(k);
  };
  return Object.assign(async (_tx: unknown, actor: Principal) => check(actor), {
    applies: (_q: unknown, actor: Principal) => {
      check(actor);
      return false;
    },
  });
}
