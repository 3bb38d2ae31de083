export { Gateway, openAiErrorBody, openAiErrorType, type GatewayOptions, type Responder } from './service.js';
export { startFakeUpstream, fakeUpstreamConfig, type FakeUpstream, type FakeUpstreamOptions, type InjectedFailure } from './fake-upstream.js';
export { agentConfigPolicy, policyEngineModelPolicy, type ModelPolicy, type ModelPolicySubject } from './policy.js';
export type { Caller, TokenCaller } from './caller.js';
