/** A Server-Sent Events frame as a client sees it. */
export interface SseFrame {
  id?: string;
  event?: string;
  data?: string;
  /** The text of a comment line (`: keepalive` → `keepalive`). */
  comment?: string;
}

/** An event frame's data, parsed. */
export interface StreamedEventJson {
  id: number;
  event_type: string;
  subject_type: string;
  subject_id: string;
  agent_id: string | null;
  data: Record<string, unknown>;
  created_at: string;
}

/** An open SSE response read frame by frame (fetch streams; `inject()` does not). */
export class SseStream {
  readonly frames: SseFrame[] = [];
  ended = false;
  private buf = '';
  private wake: (() => void) | undefined;
  private readonly controller: AbortController;

  private constructor(
    readonly response: Response,
    controller: AbortController,
  ) {
    this.controller = controller;
    void this.pump();
  }

  /** GET `url`; the stream is open (headers received) when this resolves. */
  static async open(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const controller = new AbortController();
    const response = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: controller.signal });
    return new SseStream(response, controller);
  }

  /** Starts reading a response fetched with `controller`'s signal (e.g. after leaving it unread for a while). */
  static read(response: Response, controller: AbortController): SseStream {
    return new SseStream(response, controller);
  }

  private async pump(): Promise<void> {
    const reader = this.response.body!.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.buf += decoder.decode(value, { stream: true });
        let i: number;
        while ((i = this.buf.indexOf('\n\n')) >= 0) {
          this.frames.push(parseFrame(this.buf.slice(0, i)));
          this.buf = this.buf.slice(i + 2);
        }
        this.wake?.();
      }
    } catch {
      /* aborted */
    }
    this.ended = true;
    this.wake?.();
  }

  /** Event frames (not comments) parsed, in arrival order. */
  events(): StreamedEventJson[] {
    return this.frames.filter((f) => f.data !== undefined).map((f) => JSON.parse(f.data!) as StreamedEventJson);
  }

  /** Waits until `done()` holds (checked on every chunk), or fails after `ms`. */
  async until(done: (s: SseStream) => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + ms;
    while (!done(this)) {
      if (this.ended) throw new Error(`stream ended before ${what}; got ${this.events().length} events`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${this.events().length} events: ${this.events().map((e) => e.id).join(',')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Waits until at least `n` events arrived. */
  untilEvents(n: number, ms?: number): Promise<void> {
    return this.until((s) => s.events().length >= n, ms, `${n} events`);
  }

  close(): void {
    this.controller.abort();
  }
}

function parseFrame(text: string): SseFrame {
  const frame: SseFrame = {};
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) frame.comment = line.slice(1).trim();
    else {
      const at = line.indexOf(':');
      const field = line.slice(0, at);
      const value = line.slice(at + 1).replace(/^ /, '');
      if (field === 'id' || field === 'event' || field === 'data') frame[field] = value;
    }
  }
  return frame;
}
