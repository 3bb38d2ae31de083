/** Splits a byte stream of Server-Sent Events into whole events (the text between blank lines). */
export class SseSplitter {
  private buffer = '';
  private readonly decoder = new TextDecoder();

  /** Whole events completed by this chunk. */
  push(chunk: Uint8Array): string[] {
    this.buffer += this.decoder.decode(chunk, { stream: true });
    const events: string[] = [];
    for (let i = this.buffer.search(/\r?\n\r?\n/); i >= 0; i = this.buffer.search(/\r?\n\r?\n/)) {
      const sep = /\r?\n\r?\n/.exec(this.buffer.slice(i))![0].length;
      events.push(this.buffer.slice(0, i));
      this.buffer = this.buffer.slice(i + sep);
    }
    return events;
  }

  /** What is left when the stream ended without a final blank line. */
  rest(): string {
    return this.buffer + this.decoder.decode();
  }
}

/** The data of an event (its `data:` lines joined), or undefined. */
export function eventData(event: string): string | undefined {
  const lines = event.split(/\r?\n/).filter((l) => l.startsWith('data:'));
  return lines.length ? lines.map((l) => l.slice(5).replace(/^ /, '')).join('\n') : undefined;
}
