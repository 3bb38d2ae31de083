import { countTokens } from 'gpt-tokenizer';

/**
 * Token counts for the pre-call reservation and for calls that ended without a usage figure.
 * gpt-tokenizer (o200k_base, shipped in the package: no download) counts text exactly for
 * OpenAI's current models and within a few percent for others; every message adds
 * MESSAGE_OVERHEAD tokens for its role and separators, and a reply REPLY_PRIMING, as OpenAI
 * counts them. Non-text parts (images, audio) count as IMAGE_TOKENS each — a stated
 * conservative estimate, not a measurement.
 */
const MESSAGE_OVERHEAD = 4;
const REPLY_PRIMING = 3;
const IMAGE_TOKENS = 1105;

/** Tokens of a string. */
export function textTokens(text: string): number {
  return text ? countTokens(text) : 0;
}

function contentTokens(content: unknown): number {
  if (typeof content === 'string') return textTokens(content);
  if (Array.isArray(content))
    return content.reduce<number>((n, part: { type?: string; text?: unknown }) => n + (typeof part?.text === 'string' ? textTokens(part.text) : IMAGE_TOKENS), 0);
  return content == null ? 0 : textTokens(JSON.stringify(content));
}

/** Prompt tokens of a chat request: messages (content, names, tool calls) and tool definitions. */
export function chatPromptTokens(body: { messages?: unknown; tools?: unknown; functions?: unknown }): number {
  let n = REPLY_PRIMING;
  for (const m of Array.isArray(body.messages) ? (body.messages as Record<string, unknown>[]) : []) {
    n += MESSAGE_OVERHEAD + contentTokens(m?.content);
    if (typeof m?.name === 'string') n += textTokens(m.name);
    if (m?.tool_calls) n += textTokens(JSON.stringify(m.tool_calls));
  }
  if (body.tools) n += textTokens(JSON.stringify(body.tools));
  if (body.functions) n += textTokens(JSON.stringify(body.functions));
  return n;
}

/** Input tokens of an embeddings request (strings; token arrays count their length). */
export function embeddingInputTokens(input: unknown): number {
  if (typeof input === 'string') return textTokens(input);
  if (Array.isArray(input)) return input.reduce<number>((n, x) => n + (typeof x === 'number' ? 1 : embeddingInputTokens(x)), 0);
  return 0;
}
