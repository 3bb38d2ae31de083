// An example agent-fabric agent: summarises the text in its task, and remembers.
//
// It runs unmodified in any isolation level. It reads the task (JSON) on stdin, recalls related
// earlier summaries from its semantic memory, asks a model through an OpenAI-style client at
// OPENAI_BASE_URL with OPENAI_API_KEY (the fabric's model gateway and this session's token),
// writes a report to $FABRIC_WORKSPACE/out (kept as the task's files) and its result to
// $FABRIC_WORKSPACE/result.json, then stores the summary in its semantic memory and a key in its
// key-value memory. Progress goes to stderr, which the fabric streams as the task's log.
//
// No dependencies: inside a sandbox, fetch goes out through the fabric's egress proxy (the
// preloaded proxy agent), which lets it reach the fabric's own API and gateway.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const { FABRIC_API_URL, FABRIC_TOKEN, FABRIC_AGENT_ID, OPENAI_BASE_URL, OPENAI_API_KEY } = process.env;

/** The slice of the OpenAI client this agent needs: chat.completions.create. */
function openAiClient({ baseURL, apiKey }) {
  return {
    chat: {
      completions: {
        async create(body) {
          const res = await fetch(`${baseURL}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(30_000),
          });
          const json = await res.json().catch(() => ({}));
          if (!res.ok) throw Object.assign(new Error(json.error?.message ?? `HTTP ${res.status}`), { status: res.status });
          return json;
        },
      },
    },
  };
}

/** Calls this agent's own fabric API (memory, files) with the session token. */
async function fabric(method, path, body) {
  const res = await fetch(`${FABRIC_API_URL}/api/agents/${FABRIC_AGENT_ID}${path}`, {
    method,
    headers: { authorization: `Bearer ${FABRIC_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json.error?.code ?? ''}`);
  return json;
}

/** A summary without a model: the first sentences, up to about 40 words. */
function extractiveSummary(text) {
  const sentences = text.match(/[^.!?]+[.!?]*/g) ?? [];
  const out = [];
  for (const s of sentences) {
    out.push(s.trim());
    if (out.join(' ').split(/\s+/).length >= 40) break;
  }
  return out.join(' ');
}

const task = JSON.parse(readFileSync(0, 'utf8'));
const text = String(task.payload?.text ?? '');
const workspace = process.env.FABRIC_WORKSPACE ?? '.';
console.error(`summarising ${text.length} characters for task ${task.id}`);

// what did I summarise before that is like this?
const related = await fabric('POST', '/memory/search', { query: text, top_k: 3 })
  .then((r) => r.results.filter((m) => m.similarity >= 0.5).map((m) => ({ summary: m.text, similarity: Math.round(m.similarity * 100) / 100, task_id: m.metadata.task_id })))
  .catch((err) => (console.error(`memory search failed: ${err.message}`), []));
console.error(`recalled ${related.length} related summaries`);

let summary;
let model = 'extractive (no model reached)';
try {
  const completion = await openAiClient({ baseURL: OPENAI_BASE_URL, apiKey: OPENAI_API_KEY }).chat.completions.create({
    model: task.payload?.model ?? 'gpt-4o-mini',
    max_tokens: 200,
    messages: [
      { role: 'system', content: 'Summarise the user text in at most three sentences.' },
      { role: 'user', content: text },
    ],
  });
  summary = completion.choices[0].message.content;
  model = completion.model;
} catch (err) {
  // the gateway may be unavailable or refuse (budget, policy): say so and fall back
  console.error(`model call failed (${err.status ?? err.message}); using an extractive summary`);
  summary = extractiveSummary(text);
}

const words = text.split(/\s+/).filter(Boolean).length;
writeFileSync(join(workspace, 'out', 'summary.md'), `# Summary of task ${task.id}\n\n${summary}\n\n_${words} words in, model: ${model}_\n`);
writeFileSync(join(workspace, 'result.json'), JSON.stringify({ summary, words, model, related }));

// remember it: semantically (for the next task's recall) and as the last thing done
await fabric('POST', '/memory/embed', { text: summary, metadata: { task_id: task.id } }).catch((err) => console.error(`memory embed failed: ${err.message}`));
await fabric('PUT', '/memory/last_summary', { value: { task_id: task.id, words } }).catch((err) => console.error(`memory put failed: ${err.message}`));
console.error('done');
