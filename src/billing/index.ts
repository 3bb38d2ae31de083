export { BillingService, type BillingOptions } from './service.js';
export { Plan, CreatePlanBody, UpdatePlanBody, Entitlements, listPlans, getPlan, createPlan, updatePlan, termsOf, type PlanTerms } from './plans.js';
export {
  Subscription,
  SubscribeBody,
  ChangePlanBody,
  findSubscription,
  toSubscription,
  subscribe,
  changePlan,
  suspend,
  resume,
  cancel,
} from './subscriptions.js';
export { billingPeriod, type BillingPeriod } from './period.js';
export { termsAt } from './terms.js';
export { UsageQuery, UsageReport } from './report.js';
export { ExportQuery, CONTENT_TYPES, EXPORT_COLUMNS } from './export.js';
export { ENTITLEMENT_INSUFFICIENT } from './entitlements.js';
export { DIMENSIONS, UNITS, overageCharge, type Dimension } from './units.js';
