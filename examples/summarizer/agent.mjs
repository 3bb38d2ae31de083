// An example agent-fabric agent: summarises the text in its task.
//
// It runs unmodified in any isolation level. It reads the task (JSON) on stdin, talks to a
// model through an OpenAI-style client pointed at OPENAI_BASE_URL with OPENAI_API_KEY — the
// fabric's model gateway and this session's token — writes a report to $FABRIC_WORKSPACE/out
// (kept as the task's artifacts) and its result to $FABRIC_WORKSPACE/result.json. Progress goes
// to stderr, which the fabric streams as the task's log.
//
// No dependencies: inside a container sandbox, fetch goes out through the fabric's egress
// proxy (the preloaded proxy agent), which lets it reach the fabric's own API and gateway.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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

let summary;
let model = 'extractive (no model reached)';
const client = openAiClient({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
try {
  const completion = await client.chat.completions.create({
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
writeFileSync(join(workspace, 'result.json'), JSON.stringify({ summary, words, model }));
console.error('done');
