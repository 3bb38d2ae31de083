/**
 * Secrets the tests plant on purpose, in one place: the test runner (scripts/run-tests.mjs,
 * through test/support/check-log-secrets.ts) greps every log line the suite wrote for them
 * and fails the run if one is found (NFR-SEC-2). A test that handles a credential or a prompt
 * should take it from here, so the check covers it.
 */

/** HS256 secret of every test app's tokens (and its URL signing key). */
export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

/** The provider key the fake model upstream expects: it must never reach a sandbox, a log line or a response. */
export const PROVIDER_KEY = 'sk-provider-SECRET-0123456789abcdef';

/** A marker tests put inside prompts (messages, input): prompt bodies never reach logs (§14.15). */
export const PROMPT_MARKER = 'PLANTED-PROMPT-BODY-5e1c0a9d';

/** A password tests put in connection strings and URLs that end up in error messages. */
export const URL_PASSWORD = 'PLANTED-URL-PASSWORD-b7d2e4';

/** An OTLP exporter header value (an observability vendor's API key). */
export const OTLP_HEADER_KEY = 'PLANTED-OTLP-KEY-91f0c3';

/** Fixed values: any occurrence in a log line is a leak. */
export const PLANTED_VALUES: Record<string, string> = {
  TEST_SECRET,
  PROVIDER_KEY,
  PROMPT_MARKER,
  URL_PASSWORD,
  OTLP_HEADER_KEY,
};

/**
 * Shapes of credentials minted during a run (so their values are not known in advance):
 * a JWT — session, agent and admin tokens — and the signature of a signed download URL.
 */
export const PLANTED_PATTERNS: Record<string, RegExp> = {
  'a JWT (session, agent or admin token)': /eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}/,
  'a signed URL signature': /[?&]sig=[A-Za-z0-9_-]{16,}/,
};
