// A corpus of bad requests across every route: each must answer 4xx (never 2xx, never 5xx)
// with the error envelope {"error": {"code", "message"}} and an x-request-id header, and the
// server must keep answering afterwards. Cases are data built by the small generators below.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { InjectOptions } from 'fastify';
import { SignJWT, type JWTPayload } from 'jose';
import { mintToken, type Role } from '../src/auth/index.js';
import { startTestApp, TEST_SECRET, tokenOptions, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

type Headers = Record<string, string | string[]>;
interface Case {
  name: string;
  method: NonNullable<InjectOptions['method']>;
  /** `{agent}`, `{user}` and `{workspace}` (also in payloads) are replaced by ids made in setup. */
  url: string;
  headers?: Headers;
  payload?: string | Buffer | object;
  /** The status (or statuses) the contract asks for. */
  status: number | number[];
  code?: string;
}

// ---- tokens ---------------------------------------------------------------------------------
const now = Math.floor(Date.now() / 1000);
const claims = { sub: 'bad-input', role: 'admin', tenant: 'default', iss: 'agent-fabric', aud: 'agent-fabric', iat: now, exp: now + 600 };
const sign = (payload: JWTPayload, secret = TEST_SECRET, alg = 'HS256') =>
  new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret));
const omit = (key: keyof typeof claims) => Object.fromEntries(Object.entries(claims).filter(([k]) => k !== key));
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const mint = (role: Role, tenant = 'default', sub = `bad-input-${role}`) => mintToken(tokenOptions, { role, tenant, sub, ttl: '10m' });
const bearer = (token: string): Headers => ({ authorization: `Bearer ${token}` });

const ROLES: Role[] = ['platform_admin', 'admin', 'operator', 'member', 'viewer', 'agent'];
const AUTH = Object.fromEntries(await Promise.all(ROLES.map(async (r) => [r, bearer(await mint(r))]))) as Record<Role, Headers>;
const otherAdmin = bearer(await mint('admin', 'other'));
const strangerAgent = bearer(await mint('agent', 'default', '7f1c2a9e-0000-4000-8000-000000000001'));
const nulSubAdmin = bearer(await sign({ ...claims, sub: 'nul\u0000sub' }));

/** Every way an Authorization header can be wrong; all 401 except a tenant that does not exist (403). */
const BAD_AUTH: Array<[string, Headers, number]> = [
  ['no Authorization header', {}, 401],
  ['Basic scheme', { authorization: 'Basic xyz' }, 401],
  ['"Bearer" with nothing', { authorization: 'Bearer' }, 401],
  ['Bearer not.a.jwt', { authorization: 'Bearer not.a.jwt' }, 401],
  ['garbage base64', { authorization: `Bearer ${Buffer.from('\x00\xff garbage \x13').toString('base64')}` }, 401],
  ['signed with another secret', bearer(await sign(claims, 'another-secret-that-is-also-long-enough-0123456789')), 401],
  ['alg none', { authorization: `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.` }, 401],
  ['alg HS512', bearer(await sign(claims, TEST_SECRET, 'HS512')), 401],
  ['expired', bearer(await sign({ ...claims, iat: now - 7200, exp: now - 3600 })), 401],
  ['not yet valid (nbf)', bearer(await sign({ ...claims, nbf: now + 3600 })), 401],
  ['missing sub', bearer(await sign(omit('sub'))), 401],
  ['missing exp', bearer(await sign(omit('exp'))), 401],
  ['missing role', bearer(await sign(omit('role'))), 401],
  ['unknown role', bearer(await sign({ ...claims, role: 'superuser' })), 401],
  ['malformed tenant claim', bearer(await sign({ ...claims, tenant: 'Default Tenant!' })), 401],
  ['nonexistent tenant', bearer(await sign({ ...claims, tenant: 'ghost' })), 403],
  ['wrong issuer', bearer(await sign({ ...claims, iss: 'evil-issuer' })), 401],
  ['wrong audience', bearer(await sign({ ...claims, aud: 'someone-else' })), 401],
  ['10 KB token', bearer(await sign({ ...claims, pad: 'x'.repeat(10 * 1024) })), 401],
];

// ---- routes ---------------------------------------------------------------------------------
type Route = { method: Case['method']; url: string; role: Role; valid?: object };
const API: Route[] = [
  { method: 'POST', url: '/api/agents/provision', role: 'operator', valid: { name: 'ok-agent', model: 'm' } },
  { method: 'GET', url: '/api/agents', role: 'viewer' },
  { method: 'GET', url: '/api/agents/{agent}', role: 'viewer' },
  { method: 'PATCH', url: '/api/agents/{agent}', role: 'operator', valid: { description: 'ok' } },
  { method: 'DELETE', url: '/api/agents/{agent}', role: 'operator' },
  { method: 'GET', url: '/api/tenants', role: 'platform_admin' },
  { method: 'POST', url: '/api/tenants', role: 'platform_admin', valid: { id: 'ok-tenant', name: 'Ok' } },
  { method: 'GET', url: '/api/tenants/current', role: 'viewer' },
  { method: 'GET', url: '/api/workspaces', role: 'viewer' },
  { method: 'POST', url: '/api/workspaces', role: 'admin', valid: { name: 'ok-ws' } },
  { method: 'GET', url: '/api/users', role: 'admin' },
  { method: 'GET', url: '/api/users/{user}', role: 'admin' },
  { method: 'POST', url: '/api/users', role: 'admin', valid: { email: 'ok@example.com', role: 'viewer' } },
];
const WRITES = API.filter((r) => r.valid);
const route = (method: string, url: string) => API.find((r) => r.method === method && r.url === url)!;
const PROVISION = route('POST', '/api/agents/provision');
const PATCH_AGENT = route('PATCH', '/api/agents/{agent}');
const JSON_CT = { 'content-type': 'application/json' };
const MISSING = '0b7e6c5a-1d2f-4e3a-9b8c-7d6e5f4a3b2c';

// ---- generators -----------------------------------------------------------------------------
const label = (r: Route) => `${r.method} ${r.url}`;

function authCases(): Case[] {
  return API.flatMap((r) => BAD_AUTH.map(([what, headers, status]) => ({ name: `${label(r)} with ${what}`, method: r.method, url: r.url, headers, payload: r.valid, status })));
}

/** Bodies every POST/PATCH route must refuse, sent with that route's permitted role. */
function bodyCases(): Case[] {
  type Raw = [string, string, number | number[], string?, string?];
  const raw: Raw[] = [
    ['truncated JSON', '{"name": "x"', 400], ['trailing comma', '{"name": "x",}', 400], ['single quotes', "{'name': 'x'}", 400],
    ['NaN literal', '{"name": NaN}', 400], ['bare word', 'hello', 400], ['trailing garbage', '{"name": "x"}}', 400],
    ['empty body', '', 400, 'invalid_json'], ['array body', '[]', 400], ['string body', '"agent"', 400], ['number body', '42', 400],
    ['null body', 'null', 400], ['boolean body', 'true', 400],
    ['text/plain', '{"name": "x"}', [400, 415], undefined, 'text/plain'],
    ['application/xml', '<name>x</name>', 415, 'unsupported_media_type', 'application/xml'],
    ['multipart', '--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--xyz--', 415, undefined, 'multipart/form-data; boundary=xyz'],
    ['form-urlencoded', 'name=x', 415, undefined, 'application/x-www-form-urlencoded'],
  ];
  return WRITES.flatMap((r) => {
    const valid = JSON.stringify(r.valid).slice(1, -1);
    const cases: Raw[] = [
      ...raw,
      ['__proto__ key', `{"__proto__": {"polluted": true}, ${valid}}`, 400],
      ['constructor.prototype key', `{"constructor": {"prototype": {"polluted": true}}, ${valid}}`, 400],
      ['unknown top-level field', JSON.stringify({ ...r.valid, is_admin: true }), 400, 'validation_failed'],
      ['body over 1 MiB', JSON.stringify({ ...r.valid, pad: 'x'.repeat(1024 * 1024 + 16) }), 413, 'body_too_large'],
    ];
    return cases.map(([what, payload, status, code, ct = 'application/json']) => ({ name: `${label(r)}: ${what}`, method: r.method, url: r.url, headers: { ...AUTH[r.role], 'content-type': ct }, payload, status, code }));
  });
}

/** `[label, fields, status?]` merged into a route's valid body. */
type Variant = [string, Record<string, unknown>, number?, string?];
function fieldCases(r: Route, variants: Variant[], base: object = r.valid ?? {}): Case[] {
  return variants.map(([what, fields, status = 400, code]) => ({
    name: `${label(r)}: ${what}`, method: r.method, url: r.url, headers: { ...AUTH[r.role], ...JSON_CT }, payload: JSON.stringify({ ...base, ...fields }), status, code,
  }));
}

const AGENT_FIELDS: Variant[] = [
  ['name is a number', { name: 123 }],
  ['name empty', { name: '' }],
  ['name with a slash', { name: 'bad/name' }],
  ['name 101 chars', { name: 'n'.repeat(101) }],
  ['model is an array', { model: [] }],
  ['model empty', { model: '' }],
  ['model 201 chars', { model: 'm'.repeat(201) }],
  ['tools is a string', { tools: 'x' }],
  ['tools holds a number', { tools: [1] }],
  ['257 tools', { tools: Array.from({ length: 257 }, (_, i) => `t${i}`) }],
  ['isolation.memory_mb "big"', { isolation: { memory_mb: 'big' } }],
  ['isolation.memory_mb negative', { isolation: { memory_mb: -1 } }],
  ['isolation.memory_mb huge', { isolation: { memory_mb: 1e12 } }],
  ['isolation.memory_mb float', { isolation: { memory_mb: 512.5 } }],
  ['isolation.level "vm"', { isolation: { level: 'vm' } }],
  ['isolation.cpu_cores 0', { isolation: { cpu_cores: 0 } }],
  ['isolation unknown nested field', { isolation: { gpu: true } }],
  ['isolation.network_egress a string', { isolation: { network_egress: '*' } }],
  ['budget.alert_threshold_percent 101', { budget: { alert_threshold_percent: 101 } }],
  ['budget.max_tokens_per_day negative', { budget: { max_tokens_per_day: -5 } }],
  ['budget.max_tokens_per_day 1e300', { budget: { max_tokens_per_day: 1e300 } }],
  ['budget unknown nested field', { budget: { unlimited: true } }],
  ['max_queue_depth 0', { max_queue_depth: 0 }],
  ['max_queue_depth float', { max_queue_depth: 1.5 }],
  ['max_queue_depth 100001', { max_queue_depth: 100_001 }],
  ['max_concurrency as a string', { max_concurrency: '1' }],
  ['max_concurrency negative', { max_concurrency: -3 }],
  ['description 2001 chars', { description: 'd'.repeat(2001) }],
  ['entrypoint without command or handler', { entrypoint: {} }],
  ['entrypoint.command empty', { entrypoint: { command: [] } }],
  ['entrypoint.env lowercase key', { entrypoint: { handler: 'h', env: { lower: 'x' } } }],
  ['tenant_id smuggled in', { tenant_id: 'other' }],
  ['description with a NUL byte', { description: 'nul\u0000byte' }],
  ['model with a NUL byte', { model: 'nul\u0000model' }],
];

function provisionCases(): Case[] {
  return [
    ...fieldCases(PROVISION, [
      ...AGENT_FIELDS,

      ['name missing', { name: undefined }], ['model missing', { model: undefined }], ['workspace_id not a UUID', { workspace_id: 'abc' }],
      ['workspace_id that does not exist', { workspace_id: MISSING }, 404, 'not_found'], ['owner_user_id that does not exist', { owner_user_id: MISSING }, 404, 'not_found'], ['name of an existing agent', { name: 'alpha' }, 409, 'agent_name_taken'],
      ['quota.overage_policy "maybe"', { quota: { overage_policy: 'maybe' } }], ['quota.monthly_token_limit negative', { quota: { monthly_token_limit: -1 } }], ['quota.monthly_cost_limit_usd 1e9', { quota: { monthly_cost_limit_usd: 1e9 } }],
      ['quota.monthly_cost_limit_usd 1e8 (beyond numeric(14,6))', { quota: { monthly_cost_limit_usd: 1e8 } }], ['quota unknown nested field', { quota: { monthly_gpu_limit: 1 } }], ]),
      { name: 'POST /api/agents/provision: max_queue_depth 1e400', method: 'POST', url: PROVISION.url, headers: { ...AUTH.operator, ...JSON_CT }, payload: '{"name": "x", "model": "m", "max_queue_depth": 1e400}', status: 400 }, { name: 'POST /api/agents/provision: 50k-deep nested array', method: 'POST', url: PROVISION.url, headers: { ...AUTH.operator, ...JSON_CT }, payload: `${'['.repeat(50_000)}${']'.repeat(50_000)}`, status: 400 }, ];
      }  function otherWriteCases(): Case[] {
      return [ ...fieldCases(PATCH_AGENT, [ ...AGENT_FIELDS,
      ['status "deleted"', { status: 'deleted' }], ['status "archived"', { status: 'archived' }], ['name null', { name: null }],
      ['id in the body', { id: MISSING }], ['name of another agent', { name: 'beta' }, 409, 'agent_name_taken'],
    ], {}),
    { name: 'PATCH /api/agents/{agent}: empty object', method: 'PATCH', url: PATCH_AGENT.url, headers: { ...AUTH.operator, ...JSON_CT }, payload: '{}', status: 400 },
    ...fieldCases(route('POST', '/api/tenants'), [
      ['id with capitals and underscore', { id: 'Bad_ID' }], ['id empty', { id: '' }], ['id 64 chars', { id: 'a'.repeat(64) }],
      ['id starting with a dash', { id: '-lead' }], ['id is a number', { id: 7 }], ['name empty', { name: '' }],
      ['name 201 chars', { name: 'n'.repeat(201) }], ['id of an existing tenant', { id: 'default' }, 409, 'tenant_exists'], ['name with a NUL byte', { id: 'nul-tenant', name: 'nul\u0000name' }],
    ]),
    ...fieldCases(route('POST', '/api/workspaces'), [
      ['name empty', { name: '' }], ['name with a slash', { name: 'x/y' }], ['name is a number', { name: 42 }],
      ['name missing', { name: undefined }], ['name of an existing workspace', { name: 'default' }, 409, 'workspace_exists'],
    ]),
    ...fieldCases(route('POST', '/api/users'), [
      ['email not an email', { email: 'not-an-email' }], ['email 330 chars', { email: `${'u'.repeat(318)}@example.com` }], ['role platform_admin', { role: 'platform_admin' }],
      ['role agent', { role: 'agent' }], ['role root', { role: 'root' }], ['name empty', { name: '' }],
      ['password field', { password: 'hunter2' }], ['email already taken', { email: 'taken@example.com' }, 409, 'user_exists'], ['name with a NUL byte', { email: 'nul@example.com', name: 'nul\u0000name' }],
    ]),
  ];
}

function pathCases(): Case[] {
  const ids: Array<[string, string]> = [
    ['"abc"', 'abc'], ['"1"', '1'], ['encoded ../../etc/passwd', encodeURIComponent('../../etc/passwd')], ['%00', '%00'],
    ['SQL-ish', encodeURIComponent("' OR 1=1 --")], ['UUID with braces', `%7B${MISSING}%7D`],
  ];
  const targets = [route('GET', '/api/agents/{agent}'), PATCH_AGENT, route('DELETE', '/api/agents/{agent}'), route('GET', '/api/users/{user}')];
  return targets.flatMap((r) => [
    ...ids.map(([what, id]): Case => ({ name: `${label(r)}: id ${what}`, method: r.method, url: r.url.replace(/\{\w+\}/, id), headers: AUTH[r.role], payload: r.valid, status: 400 })),
    { name: `${label(r)}: id of 300 chars`, method: r.method, url: r.url.replace(/\{\w+\}/, 'a'.repeat(300)), headers: AUTH[r.role], payload: r.valid, status: [400, 404, 414] },
    { name: `${label(r)}: UUID that does not exist`, method: r.method, url: r.url.replace(/\{\w+\}/, MISSING), headers: AUTH[r.role], payload: r.valid, status: 404, code: 'not_found' },
  ]);
}

function queryCases(): Case[] {
  const queries = [
    'limit=0', 'limit=-1', 'limit=abc', 'limit=100000', 'limit=1.5', 'limit=', 'limit=1&limit=2', 'unknown=1', 'cursor=!!!garbage!!!',
    `cursor=${b64({ junk: true })}`, `cursor=${b64(['2024-01-01T00:00:00Z', 'not-a-uuid'])}`, `cursor=${b64(['-271821-04-20T00:00:00Z', MISSING])}`,
    `cursor=${b64(['2024-13-45 99:99:99', MISSING])}`, `cursor=${b64(['2024-01-01 00:00:00', '-'.repeat(36)])}`,
    `cursor=${'c'.repeat(201)}`, 'workspace_id=abc', 'status=deleted', 'status=ACTIVE',
  ];
  return queries.map((q) => ({ name: `GET /api/agents?${q}`, method: 'GET', url: `/api/agents?${q}`, headers: AUTH.viewer, status: 400 }));
}

function roleCases(): Case[] {
  const c = (name: string, method: Case['method'], url: string, headers: Headers, status: number | number[], payload?: object): Case => ({ name, method, url, headers, status, payload });
  const agentBody = PROVISION.valid;
  return [
    ...(['viewer', 'member', 'agent'] as const).map((r) => c(`${r} provisions an agent`, 'POST', PROVISION.url, AUTH[r], 403, agentBody)),
    ...(['viewer', 'member', 'agent'] as const).map((r) => c(`${r} patches an agent`, 'PATCH', PATCH_AGENT.url, AUTH[r], 403, PATCH_AGENT.valid)),
    ...(['viewer', 'member'] as const).map((r) => c(`${r} deletes an agent`, 'DELETE', '/api/agents/{agent}', AUTH[r], 403)),
    c('agent lists agents', 'GET', '/api/agents', AUTH.agent, 403),
    c('agent reads another agent', 'GET', '/api/agents/{agent}', strangerAgent, 403),
    c('agent lists workspaces', 'GET', '/api/workspaces', AUTH.agent, 403),
    ...(['admin', 'operator', 'viewer'] as const).map((r) => c(`${r} lists tenants`, 'GET', '/api/tenants', AUTH[r], 403)),
    ...(['admin', 'agent'] as const).map((r) => c(`${r} creates a tenant`, 'POST', '/api/tenants', AUTH[r], 403, { id: 'nope', name: 'Nope' })),
    c('operator creates a workspace', 'POST', '/api/workspaces', AUTH.operator, 403, { name: 'nope' }),
    ...(['member', 'operator'] as const).map((r) => c(`${r} creates a user`, 'POST', '/api/users', AUTH[r], 403, { email: 'n@example.com', role: 'viewer' })),
    c('member lists users', 'GET', '/api/users', AUTH.member, 403),
    c('viewer reads a user', 'GET', '/api/users/{user}', AUTH.viewer, 403),
    ...(['admin', 'agent', 'viewer'] as const).map((r) => c(`x-fabric-tenant from ${r}`, 'GET', '/api/agents', { ...AUTH[r], 'x-fabric-tenant': 'other' }, 403)),
    c('platform_admin with malformed x-fabric-tenant', 'GET', '/api/agents', { ...AUTH.platform_admin, 'x-fabric-tenant': 'Bad Tenant!' }, 401),
    c('platform_admin with two x-fabric-tenant headers', 'GET', '/api/agents', { ...AUTH.platform_admin, 'x-fabric-tenant': ['default', 'other'] }, 401),
    c('platform_admin with nonexistent x-fabric-tenant', 'GET', '/api/agents', { ...AUTH.platform_admin, 'x-fabric-tenant': 'ghost' }, 403),
    c('platform_admin acting in "other" reads a default agent', 'GET', '/api/agents/{agent}', { ...AUTH.platform_admin, 'x-fabric-tenant': 'other' }, 404),
    c('admin of "other" reads a default agent', 'GET', '/api/agents/{agent}', otherAdmin, 404),
    c('admin of "other" patches a default agent', 'PATCH', '/api/agents/{agent}', otherAdmin, 404, PATCH_AGENT.valid),
    c('admin of "other" deletes a default agent', 'DELETE', '/api/agents/{agent}', otherAdmin, 404),
    c('admin of "other" reads a default user', 'GET', '/api/users/{user}', otherAdmin, 404),
    c('admin of "other" provisions into a default workspace', 'POST', PROVISION.url, otherAdmin, 404, { ...agentBody, workspace_id: '{workspace}' }),
    c('admin whose token sub holds a NUL byte creates a workspace', 'POST', '/api/workspaces', nulSubAdmin, 401, { name: 'nul-sub' }),
  ];
}

function idempotencyCases(): Case[] {
  const c = (name: string, r: Route, key: string | string[], payload: object | undefined, status: number, code: string): Case => ({
    name, method: r.method, url: r.url, headers: { ...AUTH[r.role], 'idempotency-key': key }, payload, status, code,
  });
  const ws = route('POST', '/api/workspaces');
  return WRITES.filter((r) => r.method === 'POST').flatMap((r) => [
    c(`${label(r)}: Idempotency-Key with spaces`, r, 'has spaces in it', r.valid, 400, 'invalid_idempotency_key'),
    c(`${label(r)}: Idempotency-Key of 256 chars`, r, 'k'.repeat(256), r.valid, 400, 'invalid_idempotency_key'),
    c(`${label(r)}: non-ASCII Idempotency-Key`, r, 'cl\u00e9', r.valid, 400, 'invalid_idempotency_key'),
  ]).concat([
    c('POST /api/workspaces: two Idempotency-Key headers', ws, ['a', 'b'], ws.valid, 400, 'invalid_idempotency_key'),
    c('provision reuses a key with a different body', PROVISION, 'reused-key-1', { name: 'gamma-2', model: 'm' }, 422, 'idempotency_key_reused'),
    c('workspace create reuses a provision key', ws, 'reused-key-1', { name: 'gamma' }, 422, 'idempotency_key_reused'),
    c('workspace create reuses a key with a different body', ws, 'reused-key-2', { name: 'ws-other' }, 422, 'idempotency_key_reused'),
  ]);
}

function routingCases(): Case[] {
  const c = (name: string, method: Case['method'], url: string, headers: Headers, status: number | number[]): Case => ({ name, method, url, headers, status });
  return [
    // the route table is public (/openapi.json), so an unknown route is a 404 with or without a token
    c('GET /api/nope without a token', 'GET', '/api/nope', {}, 404),
    c('GET /api/nope with a token', 'GET', '/api/nope', AUTH.admin, 404),
    c('GET /api without a token', 'GET', '/api', {}, [401, 404]),
    c('GET /api with a token', 'GET', '/api', AUTH.admin, 404),
    c('POST /healthz', 'POST', '/healthz', {}, 404),
    c('DELETE /readyz', 'DELETE', '/readyz', {}, 404),
    c('POST /openapi.json', 'POST', '/openapi.json', {}, 404),
    c('PUT /api/agents', 'PUT', '/api/agents', AUTH.admin, 404),
    c('PATCH /api/agents without an id', 'PATCH', '/api/agents', AUTH.admin, 404),
    c('DELETE /api/tenants', 'DELETE', '/api/tenants', AUTH.platform_admin, 404),
    c('OPTIONS /api/agents', 'OPTIONS', '/api/agents', AUTH.admin, 404),
    c('GET /nope', 'GET', '/nope', {}, 404),
    c('GET /API/agents (case)', 'GET', '/API/agents', AUTH.admin, 404),
    c('GET /api/agents/ (trailing slash)', 'GET', '/api/agents/', AUTH.admin, [400, 404]),
    c('GET /%61pi/agents (encoded prefix) without a token', 'GET', '/%61pi/agents', {}, [401, 404]),
    c('GET /%61pi/agents (encoded prefix) with a token of a nonexistent tenant', 'GET', '/%61pi/agents', BAD_AUTH.find(([w]) => w === 'nonexistent tenant')![1], [401, 403, 404]),
    c('GET /api/agents/%E0%A4%A (broken percent-encoding)', 'GET', '/api/agents/%E0%A4%A', AUTH.admin, 400),
    c('GET /docs/nope.js', 'GET', '/docs/nope.js', {}, 404),
    c('GET /docs/static/..%2f..%2fpackage.json', 'GET', '/docs/static/..%2f..%2fpackage.json', {}, [400, 403, 404]),
  ];
}

function headerCases(): Case[] {
  return [
    { name: 'invalid x-request-id on a request without a token', method: 'GET', url: '/api/agents', headers: { 'x-request-id': 'not a valid id!' }, status: 401 },
    { name: '200-char x-request-id on a bad body', method: 'POST', url: PROVISION.url, headers: { ...AUTH.operator, ...JSON_CT, 'x-request-id': 'r'.repeat(200) }, payload: '{', status: 400 },
    { name: 'two Authorization headers', method: 'GET', url: '/api/agents', headers: { authorization: [AUTH.admin.authorization as string, AUTH.viewer.authorization as string] }, status: 401 },
    { name: 'two bearer tokens joined by a comma', method: 'GET', url: '/api/agents', headers: { authorization: `${AUTH.admin.authorization}, ${AUTH.viewer.authorization}` }, status: 401 },
    { name: 'Content-Length larger than the limit', method: 'POST', url: PROVISION.url, headers: { ...AUTH.operator, ...JSON_CT, 'content-length': String(50 * 1024 * 1024) }, payload: '{}', status: 413 },
    { name: 'UTF-16 body', method: 'POST', url: PROVISION.url, headers: { ...AUTH.operator, 'content-type': 'application/json; charset=utf-16' }, payload: Buffer.from(JSON.stringify(PROVISION.valid), 'utf16le'), status: [400, 415] },
  ];
}

const CORPUS: Record<string, Case[]> = {
  auth: authCases(),
  bodies: bodyCases(),
  provision: provisionCases(),
  'other writes': otherWriteCases(),
  'path params': pathCases(),
  query: queryCases(),
  roles: roleCases(),
  idempotency: idempotencyCases(),
  routing: routingCases(),
  headers: headerCases(),
};
const ALL = Object.values(CORPUS).flat();
const signature = (c: Case) => JSON.stringify([c.method, c.url, c.headers ?? {}, Buffer.isBuffer(c.payload) ? c.payload.toString() : (c.payload ?? null)]);
console.log(`bad-input corpus: ${ALL.length} cases (${ENGINE})`);

// ---- the run --------------------------------------------------------------------------------
describe(`bad input: ${ALL.length} bad requests answer 4xx with the error envelope (${ENGINE})`, () => {
  let t: TestApp;
  const ids: Record<string, string> = {};

  async function ok(method: Case['method'], url: string, headers: Headers, payload: object, key: string) {
    const res = await t.app.inject({ method, url, headers, payload });
    assert.equal(res.statusCode, 201, `setup ${method} ${url}: ${res.body}`);
    return res.json()[key] as { id: string; workspace_id?: string };
  }

  before(async () => {
    t = await startTestApp();
    await ok('POST', '/api/tenants', AUTH.platform_admin, { id: 'other', name: 'Other' }, 'tenant');
    const alpha = await ok('POST', PROVISION.url, AUTH.operator, { name: 'alpha', model: 'm' }, 'agent');
    ids.agent = alpha.id;
    ids.workspace = alpha.workspace_id!;
    await ok('POST', PROVISION.url, AUTH.operator, { name: 'beta', model: 'm' }, 'agent');
    ids.user = (await ok('POST', '/api/users', AUTH.admin, { email: 'taken@example.com', role: 'viewer' }, 'user')).id;
    await ok('POST', PROVISION.url, { ...AUTH.operator, 'idempotency-key': 'reused-key-1' }, { name: 'gamma', model: 'm' }, 'agent');
    await ok('POST', '/api/workspaces', { ...AUTH.admin, 'idempotency-key': 'reused-key-2' }, { name: 'ws-primed' }, 'workspace');
  });
  after(async () => t.close());

  const fill = (s: string) => s.replace(/\{(\w+)\}/g, (m, k: string) => ids[k] ?? m);

  async function problemsOf(c: Case): Promise<string[]> {
    const payload = typeof c.payload === 'object' && !Buffer.isBuffer(c.payload) ? JSON.parse(fill(JSON.stringify(c.payload))) : c.payload;
    const res = await t.app.inject({ method: c.method, url: fill(c.url), headers: c.headers, payload });
    if (process.env.BAD_INPUT_VERBOSE) console.log(`${res.statusCode} ${c.name} ${res.body.slice(0, 160)}`);
    const out: string[] = [];
    const expected = ([] as number[]).concat(c.status);
    if (res.statusCode < 400 || res.statusCode >= 500) out.push(`status ${res.statusCode} is not 4xx`);
    else if (!expected.includes(res.statusCode)) out.push(`status ${res.statusCode}, expected ${expected.join(' or ')}`);
    let body: { error?: { code?: unknown; message?: unknown } } | undefined;
    try {
      body = res.json();
    } catch {
      out.push('body is not JSON');
    }
    const { code, message } = body?.error ?? {};
    if (typeof code !== 'string' || !code || typeof message !== 'string' || !message) out.push('body is not the {"error": {"code", "message"}} envelope');
    else if (c.code && code !== c.code) out.push(`code "${code}", expected "${c.code}"`);
    const rid = res.headers['x-request-id'];
    const sent = c.headers?.['x-request-id'];
    if (typeof rid !== 'string' || !rid) out.push('no x-request-id header');
    else if (typeof sent === 'string' && !/^[A-Za-z0-9._:-]{1,128}$/.test(sent) && rid === sent) out.push('an invalid x-request-id was echoed back');
    return out.length ? [`${c.name}: ${c.method} ${c.url.slice(0, 100)} -> ${out.join('; ')}\n    ${res.statusCode} ${res.body.slice(0, 200)}`] : [];
  }

  for (const [category, cases] of Object.entries(CORPUS)) {
    it(`${category}: ${cases.length} cases`, async () => {
      const failures: string[] = [];
      for (const c of cases) failures.push(...(await problemsOf(c)));
      if (failures.length) assert.fail(`${failures.length} of ${cases.length} ${category} cases broke the contract:\n  ${failures.join('\n  ')}`);
    });
  }

  it(`the corpus holds at least 200 distinct cases (${ALL.length})`, () => {
    assert.equal(new Set(ALL.map((c) => c.name)).size, ALL.length, 'case names are unique');
    assert.equal(new Set(ALL.map(signature)).size, ALL.length, 'requests are distinct');
    assert.ok(ALL.length >= 200, `only ${ALL.length} cases`);
  });

  it('the server still answers afterwards and nothing was polluted', async () => {
    const health = await t.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200, health.body);
    assert.deepEqual(health.json(), { status: 'ok' });
    const list = await t.app.inject({ method: 'GET', url: '/api/agents', headers: AUTH.viewer });
    assert.equal(list.statusCode, 200, list.body);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});
