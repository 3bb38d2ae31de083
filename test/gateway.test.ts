import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { microsToUsd } from '../src/budget/index.js';
import type { TestApp } from './support/app.js';
import { setQuota } from './support/budget.js';
import { ENGINE } from './support/engine.js';
import { gatewayAgent, metered, PROVIDER_KEY, runningSession, startGatewayApp, type GatewayApp } from './support/gateway.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(`model gateway (${ENGINE})`, () => {
  let t: GatewayApp;
  /** Every response body and header block the tests saw: none may contain the provider key. */
  const seen: string[] = [];
  before(async () => {
    t = await startGatewayApp({ agentRpm: 40 });
  });
  after(async () => {
    const leaked = [...seen, ...t.logs].filter((s) => s.includes(PROVIDER_KEY));
    await t?.close();
    assert.deepEqual(leaked, [], 'the provider key appeared in a response or log line');
  });

  const quota = async (agent: string) => (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin') })).json().quota;
  const client = (token: string, opts: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) =>
    new OpenAI({ baseURL: `${t.base}/v1`, apiKey: token, maxRetries: 0, ...opts, fetch: async (url: string | URL | Request, init?: RequestInit) => {
      const res = await fetch(url, init);
      seen.push(JSON.stringify([...res.headers]));
      const copy = res.clone();
      void copy.text().then((b) => seen.push(b)).catch(() => {});
      return res;
    } });
  const raw = async (token: string, path: string, body: unknown) => {
    const res = await fetch(`${t.base}/v1${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    seen.push(text, JSON.stringify([...res.headers]));
    return { status: res.status, headers: res.headers, json: JSON.parse(text) as { error: { message: string; type: string; code: string; param: string | null } } & Record<string, unknown> };
  };
  const chat = (content: string, extra: Record<string, unknown> = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content }], max_tokens: 50, ...extra });
  const usageRows = (taskId: string) =>
    t.db.query<{ model: string; input_tokens: string; output_tokens: string; cost_micros: string; session_id: string; idempotency_key: string }>(
      `SELECT model, input_tokens::text, output_tokens::text, cost_micros::text, session_id::text, idempotency_key FROM agent_quota_usage WHERE task_id = $1 AND dimension = 'tokens' ORDER BY id`,
      [taskId],
    );
  const calls = (taskId: string) => t.db.query<{ data: Record<string, unknown> }>(`SELECT data FROM system_events WHERE event_type = 'model.call' AND subject_id = $1 ORDER BY id`, [taskId]);

  it('the unmodified openai client: a plain completion is forwarded with the provider key, attributed, metered and shown in the quota', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const before = t.fake.requests.length;
    const completion = await client(s.token).chat.completions.create(chat('Summarise the quarterly pipeline review for the team'));
    assert.match(completion.choices[0]!.message.content ?? '', /^\[fake\] Summarise the quarterly/);
    assert.equal(completion.system_fingerprint, 'fabric-fake');
    const sent = t.fake.requests.slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.authorization, `Bearer ${PROVIDER_KEY}`, 'the provider gets its key, not the session token');
    const u = completion.usage!;
    await metered(t, s.taskId, 1);
    const rows = (await usageRows(s.taskId)).rows;
    assert.equal(rows.length, 1);
    assert.deepEqual([rows[0]!.model, Number(rows[0]!.input_tokens), Number(rows[0]!.output_tokens), rows[0]!.session_id], ['gpt-4o-mini', u.prompt_tokens, u.completion_tokens, s.sessionId]);
    const cost = Math.ceil((u.prompt_tokens * 150_000 + u.completion_tokens * 600_000) / 1e6);
    assert.equal(Number(rows[0]!.cost_micros), cost);
    const q = await quota(agent);
    assert.equal(q.monthly_tokens_used, u.total_tokens);
    assert.equal(q.monthly_cost_used_micros, cost);
    assert.equal(q.tokens_reserved, 0, 'the worst case was reserved and released');
    const [event] = (await calls(s.taskId)).rows;
    assert.equal(event!.data.session_id, s.sessionId);
    assert.equal(event!.data.input_tokens, u.prompt_tokens);
    assert.equal(event!.data.outcome, 'complete');
    assert.ok(!JSON.stringify(event!.data).includes('quarterly'), 'no prompt text in the event');
    const metrics = await (await fetch(`${t.base}/metrics`)).text();
    assert.match(metrics, new RegExp(`agent_fabric_tokens_total\\{agent_id="${agent}",model="gpt-4o-mini"\\} ${u.total_tokens}`));
    assert.match(metrics, /agent_fabric_gateway_upstream_duration_seconds_count\{upstream="fake",model="gpt-4o-mini",outcome="ok"\}/);
  });

  it('the unmodified openai client: streaming passes the chunks through, asks the provider for usage and meters it', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const stream = await client(s.token).chat.completions.create({ ...chat('one two three four five'), stream: true as const });
    let text = '';
    let usageChunks = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usageChunks++;
    }
    assert.equal(text, '[fake] one two three four five');
    assert.equal(usageChunks, 0, 'the usage chunk the client did not ask for is not passed on');
    assert.deepEqual(t.fake.requests.at(-1)!.body.stream_options, { include_usage: true });
    await metered(t, s.taskId, 1);
    const rows = (await usageRows(s.taskId)).rows;
    assert.deepEqual(rows.map((r) => Number(r.output_tokens)), [6]);
    assert.equal((await quota(agent)).monthly_tokens_used, Number(rows[0]!.input_tokens) + 6);
    // asked for, it arrives
    const again = await client(s.token).chat.completions.create({ ...chat('six seven'), stream: true as const, stream_options: { include_usage: true } });
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of again) usage = chunk.usage ?? usage;
    assert.equal(usage?.completion_tokens, 3);
  });

  it('GET /v1/models lists the models the agent may use, labelled fake; embeddings are metered too', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const models = await client(s.token).models.list();
    assert.deepEqual(models.data.map((m) => m.id).sort(), ['gpt-4o-mini', 'text-embedding-3-small']);
    assert.ok(models.data.every((m) => m.owned_by.includes('fake')));
    const e = await client(s.token).embeddings.create({ model: 'text-embedding-3-small', input: ['alpha beta', 'gamma'] });
    assert.equal(e.data.length, 2);
    await metered(t, s.taskId, 1);
    assert.deepEqual((await usageRows(s.taskId)).rows.map((r) => [r.model, Number(r.input_tokens)]), [['text-embedding-3-small', 3]]);
    // a model outside the agent's config
    const refused = await raw(s.token, '/chat/completions', chat('hi', { model: 'gpt-4o' }));
    assert.equal(refused.status, 403);
    assert.deepEqual([refused.json.error.code, refused.json.error.type, refused.json.error.param], ['model_not_allowed', 'permission_error', 'model']);
    const unknown = await raw(s.token, '/chat/completions', chat('hi', { model: 'no-such-model' }));
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'model_not_found');
  });

  it('policy door: a model.use deny answers 403 model_not_allowed with the policy\'s reason, sends nothing, and the decision is logged (door gateway)', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const created = await t.app.inject({
      method: 'POST',
      url: '/api/policies',
      headers: await t.auth('admin'),
      payload: { name: `no-gpt-4o-mini-${agent}`, scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'model.use', effect: 'deny', conditions: { resource: ['gpt-4o-*'] }, reason: 'this agent must use the cheaper model' }] },
    });
    assert.equal(created.statusCode, 201, created.body);
    const before = t.fake.requests.length;
    const res = await raw(s.token, '/chat/completions', chat('hello'));
    assert.equal(res.status, 403);
    assert.equal(res.json.error.code, 'model_not_allowed');
    assert.match(res.json.error.message, /refused by policy: .*cheaper model/);
    assert.equal(t.fake.requests.length, before, 'nothing was sent upstream');
    assert.equal((await quota(agent)).tokens_reserved, 0, 'the worst case reserved for the call was given back');
    await t.app.inject({ method: 'GET', url: `/api/policy/decisions?agent_id=${agent}`, headers: await t.auth('admin') });
    const logged = await t.db.query<{ door: string; decision: string; resource: string }>(`SELECT door, decision, resource FROM policy_decisions WHERE agent_id = $1`, [agent]);
    assert.deepEqual(logged.rows.map((r) => [r.door, r.decision, r.resource]), [['gateway', 'deny', 'gpt-4o-mini']]);
  });

  it('quota exceeded: 429 quota_exceeded in OpenAI shape, and the provider sees no request', async () => {
    const agent = await gatewayAgent(t, { quota: { monthly_token_limit: 1000, overage_policy: 'block' } });
    const s = await runningSession(t, agent);
    await setQuota(t, agent, { monthly_tokens_used: 990 });
    const before = t.fake.requests.length;
    const res = await raw(s.token, '/chat/completions', chat('this needs more than ten tokens'));
    assert.equal(res.status, 429);
    assert.equal(res.json.error.code, 'quota_exceeded');
    assert.equal(res.json.error.type, 'insufficient_quota');
    assert.equal(res.json.error.param, null);
    assert.match(res.json.error.message, /was not sent to the provider/);
    assert.equal(res.headers.get('x-should-retry'), 'false', 'the openai client does not retry it');
    assert.equal(t.fake.requests.length, before, 'nothing went upstream');
    // through the client: an APIError with the same code, no retries
    await assert.rejects(client(s.token, { maxRetries: 2 }).chat.completions.create(chat('again')), (err: { status: number; code: string }) => err.status === 429 && err.code === 'quota_exceeded');
    assert.equal(t.fake.requests.length, before);
    assert.equal((await quota(agent)).tokens_reserved, 0);
  });

  it('a client that disconnects mid-stream: the provider call is aborted and what was produced is still metered', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    t.fake.options.chunkDelayMs = 30;
    t.fake.options.omitUsage = true;
    try {
      const words = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
      const ac = new AbortController();
      const res = await fetch(`${t.base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(chat(words, { stream: true, max_tokens: 100 })),
        signal: ac.signal,
      });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      let got = '';
      while ((got.match(/"content":"[^"]+"/g) ?? []).length < 5) got += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      let rows: Awaited<ReturnType<typeof usageRows>>['rows'] = [];
      for (let i = 0; i < 100 && rows.length === 0; i++) {
        await sleep(50);
        rows = (await usageRows(s.taskId)).rows;
      }
      assert.equal(rows.length, 1, 'metered after the disconnect');
      const out = Number(rows[0]!.output_tokens);
      assert.ok(out >= 4 && out < 40, `output estimated from the streamed text: ${out}`);
      assert.ok(Number(rows[0]!.input_tokens) > 60, 'the prompt counted with the tokenizer');
      const [event] = (await calls(s.taskId)).rows;
      assert.deepEqual([event!.data.outcome, event!.data.usage_source], ['client_disconnected', 'estimated']);
      assert.equal((await quota(agent)).tokens_reserved, 0);
    } finally {
      t.fake.options.chunkDelayMs = 0;
      t.fake.options.omitUsage = false;
    }
  });

  it('race: concurrent calls of one agent for the last budget never overspend', async () => {
    const agent = await gatewayAgent(t, { quota: { monthly_token_limit: 1000, overage_policy: 'block' } });
    const s = await runningSession(t, agent);
    // every call is in flight at once and uses nearly its worst case (about 9 prompt tokens + 100)
    t.fake.options.latencyMs = 300;
    t.fake.options.usage = { prompt_tokens: 5, completion_tokens: 100 };
    let results: Awaited<ReturnType<typeof raw>>[];
    try {
      results = await Promise.all(Array.from({ length: 20 }, (_, i) => raw(s.token, '/chat/completions', chat(`call ${i}`, { max_tokens: 100 }))));
    } finally {
      t.fake.options.latencyMs = 0;
      t.fake.options.usage = undefined;
    }
    const ok = results.filter((r) => r.status === 200);
    await metered(t, s.taskId, ok.length);
    assert.ok(ok.length >= 5 && ok.length <= 9, `${ok.length} admitted: at most 1000 / ~109 worst cases fit`);
    assert.ok(results.every((r) => r.status === 200 || r.json.error.code === 'quota_exceeded'), results.map((r) => r.status).join(','));
    const q = await quota(agent);
    assert.ok(q.monthly_tokens_used <= 1000, `used ${q.monthly_tokens_used}`);
    assert.equal(q.tokens_reserved, 0);
    assert.equal((await usageRows(s.taskId)).rows.length, ok.length);
  });

  it('a finished session\'s token is refused (401); a cancelled task\'s calls are refused (403) and its in-flight call aborted', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    await t.db.query(`UPDATE agent_sessions SET status = 'completed', ended_at = now() WHERE id = $1`, [s.sessionId]);
    const before = t.fake.requests.length;
    const ended = await raw(s.token, '/chat/completions', chat('hello'));
    assert.equal(ended.status, 401);
    assert.deepEqual([ended.json.error.code, ended.json.error.type], ['session_ended', 'authentication_error']);
    await assert.rejects(client(s.token).models.list(), (err: { status: number }) => err.status === 401);

    const s2 = await runningSession(t, agent);
    t.fake.options.latencyMs = 3000;
    try {
      const pending = raw(s2.token, '/chat/completions', chat('slow'));
      await sleep(300);
      await t.db.query('UPDATE tasks SET cancel_requested = true WHERE id = $1', [s2.taskId]);
      const started = Date.now();
      const res = await pending;
      assert.ok(Date.now() - started < 1500, 'aborted at the next cancel check, not after the provider answered');
      assert.deepEqual([res.status, res.json.error.code], [403, 'task_stopped']);
      const again = await raw(s2.token, '/chat/completions', chat('more'));
      assert.deepEqual([again.status, again.json.error.code], [403, 'task_stopped']);
    } finally {
      t.fake.options.latencyMs = 0;
    }
    assert.equal(t.fake.requests.length, before + 1, 'only the aborted call reached the provider');
    // no token at all, a person's token
    assert.equal((await raw('', '/chat/completions', chat('x'))).json.error.code, 'missing_token');
    assert.equal((await raw(await t.token('admin'), '/chat/completions', chat('x'))).status, 403);
  });

  it('provider failures: 500 and 429 are retried, a timeout is retried, exhausted retries answer 502 in OpenAI shape with nothing charged', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    let n = t.fake.requests.length;
    t.fake.failures.push(500, 429);
    assert.equal((await raw(s.token, '/chat/completions', chat('retry me'))).status, 200);
    await metered(t, s.taskId, 1);
    assert.equal(t.fake.requests.length - n, 3);
    n = t.fake.requests.length;
    t.fake.failures.push('timeout');
    const timed = await startGatewayAppTimeout(s.token);
    assert.equal(timed, 200);
    await metered(t, s.taskId, 2);
    assert.equal(t.fake.requests.length - n, 2);
    n = t.fake.requests.length;
    t.fake.failures.push(500, 500, 500);
    const failed = await raw(s.token, '/chat/completions', chat('fail'));
    assert.equal(failed.status, 502);
    assert.deepEqual([failed.json.error.code, failed.json.error.type], ['upstream_error', 'api_error']);
    assert.equal(t.fake.requests.length - n, 3, 'one try and two retries');
    const events = (await calls(s.taskId)).rows.map((r) => [r.data.outcome, r.data.tries]);
    assert.deepEqual(events, [['complete', 3], ['complete', 2], ['upstream_error', 3]]);
    assert.equal((await usageRows(s.taskId)).rows.length, 2, 'the failed call charged nothing');
    assert.equal((await quota(agent)).tokens_reserved, 0);
  });

  async function startGatewayAppTimeout(token: string): Promise<number> {
    // the fake holds the first request; the try times out (attemptTimeoutMs 2000) and the retry answers
    return (await raw(token, '/chat/completions', chat('held'))).status;
  }

  it('spend past a hard limit during a run stops the task with INSUFFICIENT_FUNDS; its session is refused from then on', async () => {
    const agent = await gatewayAgent(t, { quota: { monthly_token_limit: 2000, overage_policy: 'block' } });
    const s = await runningSession(t, agent);
    t.fake.options.usage = { prompt_tokens: 1500, completion_tokens: 900 }; // the provider reports more than the worst case
    try {
      assert.equal((await raw(s.token, '/chat/completions', chat('big'))).status, 200);
    } finally {
      t.fake.options.usage = undefined;
    }
    await metered(t, s.taskId, 1);
    const task = await t.db.query<{ cancel_requested: boolean; stop_error: { code: string } }>('SELECT cancel_requested, stop_error FROM tasks WHERE id = $1', [s.taskId]);
    assert.deepEqual([task.rows[0]!.cancel_requested, task.rows[0]!.stop_error.code], [true, 'INSUFFICIENT_FUNDS']);
    const next = await raw(s.token, '/chat/completions', chat('more'));
    assert.deepEqual([next.status, next.json.error.code], [403, 'task_stopped']);
    assert.match(next.json.error.message, /INSUFFICIENT_FUNDS/);
  });

  it('rate limit per agent: 429 rate_limit_exceeded with retry-after', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 45 }, () => raw(s.token, '/chat/completions', chat('r', { max_tokens: 5 }))));
    const refilled = Math.ceil((Date.now() - started) / 1500); // 40 a minute: one more every 1.5 s
    const limited = results.filter((r) => r.status === 429);
    const admitted = results.length - limited.length;
    assert.ok(admitted >= 40 && admitted <= 40 + refilled, `FABRIC_GATEWAY_AGENT_RPM=40 in this app; ${admitted} admitted`);
    assert.equal(limited[0]!.json.error.code, 'rate_limit_exceeded');
    assert.equal(limited[0]!.json.error.type, 'rate_limit_error');
    assert.ok(Number(limited[0]!.headers.get('retry-after')) >= 1);
  });

  it('an agent token names its running task in X-Fabric-Task-Id', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const token = await t.token('agent', { sub: agent });
    const missing = await raw(token, '/chat/completions', chat('x'));
    assert.deepEqual([missing.status, missing.json.error.code], [400, 'task_required']);
    const res = await fetch(`${t.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-fabric-task-id': s.taskId },
      body: JSON.stringify(chat('via agent token')),
    });
    assert.equal(res.status, 200);
    await metered(t, s.taskId, 1);
    assert.equal((await usageRows(s.taskId)).rows[0]!.session_id, null);
  });

  it('one-statement admit and settle: quota and budget counters agree with the usage rows, due alerts are recorded, and a stop leaves the same row, event and audit as meterUsage', async () => {
    const agent = await gatewayAgent(t, { quota: { monthly_token_limit: 100_000_000, monthly_cost_limit_usd: 1000, overage_policy: 'block' } });
    const ws = (await t.db.query<{ w: string }>('SELECT workspace_id::text AS w FROM agents WHERE id = $1', [agent])).rows[0]!.w;
    const mk = await t.app.inject({ method: 'POST', url: '/api/budgets', headers: await t.auth('admin'), payload: { scope: 'workspace', scope_id: ws, max_cost_per_day_usd: '0.5', alert_threshold_percent: 50 } });
    assert.equal(mk.statusCode, 201, mk.body);
    const budgetId: string = mk.json().budget.id;
    try {
      const s = await runningSession(t, agent);
      for (let i = 0; i < 3; i++) assert.equal((await raw(s.token, '/chat/completions', chat(`call ${i}`))).status, 200);
      t.fake.options.usage = { prompt_tokens: 4_000_000, completion_tokens: 10 }; // 0.600006 USD: past the budget's 0.5
      try {
        assert.equal((await raw(s.token, '/chat/completions', chat('big'))).status, 200);
      } finally {
        t.fake.options.usage = undefined;
      }
      await metered(t, s.taskId, 4);
      const sums = (await t.db.query<{ tokens: number; cost: number }>(`SELECT sum(quantity)::int AS tokens, sum(cost_micros)::int AS cost FROM agent_quota_usage WHERE task_id = $1`, [s.taskId])).rows[0]!;
      const q = (await t.db.query<{ used: number; cost: number; reserved: number; cost_reserved: number }>(
        `SELECT monthly_tokens_used::int AS used, (monthly_cost_used_usd * 1000000)::int AS cost, tokens_reserved::int AS reserved, cost_reserved_micros::int AS cost_reserved FROM agent_quotas WHERE agent_id = $1`, [agent])).rows[0]!;
      assert.deepEqual(q, { used: sums.tokens, cost: sums.cost, reserved: 0, cost_reserved: 0 });
      const b = (await t.db.query<{ used: number; cost: number; reserved: number; cost_reserved: number }>(
        `SELECT tokens_used::int AS used, cost_used_micros::int AS cost, tokens_reserved::int AS reserved, cost_reserved_micros::int AS cost_reserved FROM budgets WHERE id = $1`, [budgetId])).rows[0]!;
      assert.deepEqual(b, { used: sums.tokens, cost: sums.cost, reserved: 0, cost_reserved: 0 });
      const open = await t.db.query(`SELECT 1 FROM budget_reservations WHERE agent_id = $1 AND status = 'open'`, [agent]);
      assert.equal(open.rows.length, 0);
      const alerts = await t.db.query<{ kind: string }>(`SELECT kind FROM budget_alerts WHERE entity_type = 'budget' AND entity_id = $1 ORDER BY kind`, [budgetId]);
      assert.deepEqual(alerts.rows.map((r) => r.kind), ['exhausted', 'overage', 'threshold']);
      const task = (await t.db.query<{ cancel_requested: boolean; stop_error: { code: string; message: string; limit: { used: number; limit_value: number } } }>('SELECT cancel_requested, stop_error FROM tasks WHERE id = $1', [s.taskId])).rows[0]!;
      assert.equal(task.cancel_requested, true);
      const lim = task.stop_error.limit;
      assert.deepEqual(lim, { entity_type: 'budget', entity_id: budgetId, limit: 'max_cost_per_day_usd', unit: 'micro_usd', limit_value: 500_000, used: sums.cost });
      assert.equal(task.stop_error.message, `Spend passed the hard limit max_cost_per_day_usd of budget ${budgetId} (${microsToUsd(lim.used)} of ${microsToUsd(lim.limit_value)} USD); the task was stopped. Raise the limit or wait for the next period, then submit it again.`);
      const audit = await t.db.query<{ after: unknown }>(`SELECT after FROM audit_log WHERE action = 'task.insufficient_funds' AND target_id = $1`, [s.taskId]);
      assert.deepEqual(audit.rows.map((r) => r.after), [task.stop_error]);
      const running = await t.db.query<{ data: { error: { code: string } } }>(`SELECT data FROM system_events WHERE event_type = 'task.running' AND subject_id = $1 AND data ? 'error'`, [s.taskId]);
      assert.deepEqual(running.rows.map((r) => r.data.error.code), ['INSUFFICIENT_FUNDS']);
      assert.deepEqual((await calls(s.taskId)).rows.map((r) => r.data.stopped ?? null), [null, null, null, 'INSUFFICIENT_FUNDS']);
    } finally {
      await t.app.inject({ method: 'DELETE', url: `/api/budgets/${budgetId}`, headers: await t.auth('admin') });
    }
  });
});

export type { TestApp };
