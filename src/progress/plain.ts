import type { BuildEvent } from "../buildkit/events.js";
import { formatBytes, formatSeconds, platformPrefix, sanitizeLine } from "./format.js";
import type { ProgressRenderer } from "./renderer.js";
import { type Step, StepTable, warningLocation } from "./steps.js";

/** A progress bar's intermediate values are printed at most this often (its completion always). */
const PROGRESS_LINE_INTERVAL_MS = 2_000;

/**
 * buildx's `plain` output: one line per event, no ANSI, stable for logs and CI.
 *
 *     #4 [build 2/3] RUN make
 *     #4 0.153 compiling…
 *     #4 DONE 0.4s
 *
 *     #5 [build 3/3] COPY . .
 *     #5 CACHED
 *
 * A vertex's name is printed again whenever the output switches to it.
 */
export class PlainRenderer implements ProgressRenderer {
  readonly #out: NodeJS.WritableStream;
  readonly #now: () => number;
  readonly #steps = new StepTable({ logLimit: 0 });
  /** The step the last lines were about. */
  #current: string | undefined;
  #wroteAny = false;
  /** When each bar was last printed, by step key and bar id. */
  readonly #printedProgress = new Map<string, { at: number; completed: boolean }>();

  constructor(out: NodeJS.WritableStream, options: { now?: () => number } = {}) {
    this.#out = out;
    this.#now = options.now ?? Date.now;
  }

  event(event: BuildEvent): void {
    const now = this.#now();
    const step = this.#steps.apply(event, now);
    if (event.type === "warning") {
      const where = warningLocation(event);
      const lines = [`${platformPrefix(event.platform)}WARNING: ${sanitizeLine(event.message)}${where ? ` (${where})` : ""}`];
      for (const detail of event.detail) lines.push(`  ${sanitizeLine(detail)}`);
      if (event.url) lines.push(`  More info: ${event.url}`);
      this.#write(lines);
      this.#current = undefined;
      return;
    }
    if (!step) return;
    const n = `#${step.number}`;
    switch (event.type) {
      case "vertex.started":
        this.#write(this.#header(step, true));
        break;
      case "vertex.cached":
        this.#write([...this.#header(step), `${n} CACHED`]);
        break;
      case "vertex.completed":
        this.#write([...this.#header(step), `${n} DONE ${formatSeconds(step.durationMs ?? 0)}`]);
        break;
      case "vertex.errored":
        this.#write([...this.#header(step), `${n} ERROR: ${sanitizeLine(event.error)}`]);
        break;
      case "log": {
        const since = step.startedAt && event.timestamp ? event.timestamp.getTime() - step.startedAt.getTime() : step.startedLocal !== undefined ? now - step.startedLocal : 0;
        this.#write([...this.#header(step), `${n} ${(Math.max(0, since) / 1000).toFixed(3)} ${sanitizeLine(event.line)}`]);
        break;
      }
      case "progress": {
        const key = `${step.key}\u0000${event.id}`;
        const printed = this.#printedProgress.get(key);
        if (printed?.completed) break;
        if (!event.completed && event.current === 0 && event.total === 0) break; // nothing to tell yet
        if (!event.completed && printed && now - printed.at < PROGRESS_LINE_INTERVAL_MS) break;
        this.#printedProgress.set(key, { at: now, completed: event.completed });
        const amount = event.total > 0 ? `${formatBytes(event.current)} / ${formatBytes(event.total)}` : event.current > 0 ? formatBytes(event.current) : "";
        const text = [sanitizeLine(event.id), amount, event.completed ? "done" : ""].filter(Boolean).join(" ");
        this.#write([...this.#header(step), `${n} ${text}`]);
        break;
      }
    }
  }

  done(outcome: { error?: unknown } = {}): void {
    // Every event was printed as it came; steps cut short by a failure or an abort end here.
    if (outcome.error === undefined) return;
    for (const step of this.#steps.cancelRunning(this.#now())) this.#write([...this.#header(step), `#${step.number} CANCELED`]);
  }

  /** The vertex's name line, when the output switches to it (or it starts again). */
  #header(step: Step, force = false): string[] {
    if (!force && this.#current === step.key) return [];
    const lines = this.#wroteAny ? ["", `#${step.number} ${platformPrefix(step.platform)}${sanitizeLine(step.name)}`] : [`#${step.number} ${platformPrefix(step.platform)}${sanitizeLine(step.name)}`];
    this.#current = step.key;
    return lines;
  }

  #write(lines: string[]): void {
    if (lines.length === 0) return;
    this.#wroteAny = true;
    this.#out.write(`${lines.join("\n")}\n`);
  }
}
