import type { BuildEvent } from "../buildkit/events.js";
import type { ProgressRenderer } from "./renderer.js";

/**
 * One JSON object per line: exactly the library's BuildEvents (dates as ISO
 * strings), nothing else, so the stream stays line-delimited JSON.
 */
export class RawJsonRenderer implements ProgressRenderer {
  readonly #out: NodeJS.WritableStream;

  constructor(out: NodeJS.WritableStream) {
    this.#out = out;
  }

  event(event: BuildEvent): void {
    this.#out.write(`${JSON.stringify(event)}\n`);
  }

  done(): void {
    // Pure NDJSON: no trailer.
  }
}
