import type { BuildEvent } from "../buildkit/events.js";
import { formatBytes, formatSeconds, paint, platformPrefix, sanitizeLine, type Style, truncate, visibleLength } from "./format.js";
import { isCanceled, type ProgressRenderer } from "./renderer.js";
import { type Step, type StepCounts, type StepProgress, StepTable, warningLocation } from "./steps.js";

export interface TtyRendererOptions {
  /** SGR colors. */
  color: boolean;
  /** Lines of output shown under each running step. */
  logLines: number;
  /** At most one frame per this many ms. */
  frameIntervalMs: number;
  now?: () => number;
}

/** Bars shown under one running step. */
const MAX_BARS_PER_STEP = 4;
const BAR_WIDTH = 20;
/** Width when the stream does not say (a tty forced onto a pipe). */
const DEFAULT_COLUMNS = 80;

type Outcome = "finished" | "error" | "canceled";

/**
 * A live view like buildx's `tty` mode, redrawn in place:
 *
 *     [+] Building 2.4s (7/9)
 *      => [internal] load build definition from Dockerfile            0.0s
 *      => CACHED [build 2/4] WORKDIR /src                              0.0s
 *      => [build 4/4] RUN make                                         1.2s
 *      => => # compiling main.c
 *
 * Frames are throttled and each is one write: cursor up over the last frame,
 * every line rewritten and cleared to its end, the rest of the screen cleared.
 * Live frames fit the terminal's height; the final frame lists every step
 * (and the failed step's output), the warnings and a summary line.
 */
export class TtyRenderer implements ProgressRenderer {
  readonly #out: NodeJS.WritableStream & { columns?: number; rows?: number };
  readonly #options: TtyRendererOptions;
  readonly #now: () => number;
  readonly #steps: StepTable;
  readonly #startedAt: number;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #closed = false;
  /** Lines of the frame on screen, to move back over. */
  #linesOnScreen = 0;

  constructor(out: NodeJS.WritableStream, options: TtyRendererOptions) {
    this.#out = out;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#startedAt = this.#now();
    this.#steps = new StepTable({ logLimit: Math.max(options.logLines, 10) });
  }

  event(event: BuildEvent): void {
    if (this.#closed) return;
    this.#steps.apply(event, this.#now());
    this.#dirty = true;
    if (!this.#timer) {
      this.#draw(undefined);
      this.#timer = setInterval(() => this.#tick(), this.#options.frameIntervalMs);
      this.#timer.unref();
    }
  }

  done(outcome: { error?: unknown } = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    const error = outcome.error;
    if (error !== undefined) this.#steps.cancelRunning(this.#now());
    this.#draw(error === undefined ? "finished" : isCanceled(error) ? "canceled" : "error");
  }

  #tick(): void {
    // Running steps show a live timer, so they need frames even without news.
    if (this.#dirty || this.#steps.steps.some((s) => s.status === "running")) this.#draw(undefined);
  }

  #draw(final: Outcome | undefined): void {
    this.#dirty = false;
    const lines = this.#frame(final);
    let text = this.#linesOnScreen > 0 ? `\u001b[${this.#linesOnScreen}A\r` : "\r";
    text += lines.map((line) => `${line}\u001b[K\n`).join("");
    text += "\u001b[J";
    this.#out.write(text);
    this.#linesOnScreen = final ? 0 : lines.length;
  }

  #frame(final: Outcome | undefined): string[] {
    const now = this.#now();
    const width = Math.max(20, (this.#out.columns || DEFAULT_COLUMNS) - 1);
    const color = this.#options.color;
    const counts = this.#steps.counts();
    const header = this.#header(now, counts, final, width);

    const body: string[] = [];
    for (const step of this.#steps.steps) {
      const time = stepTime(step, now);
      const left = ` => ${stepPrefix(step)}${platformPrefix(step.platform)}${sanitizeLine(step.name)}`;
      body.push(paint(alignRight(left, time, width), stepStyle(step), color));
      const showLive = !final && step.status === "running";
      if (showLive) {
        for (const bar of liveBars(step)) body.push(alignRight(` => => ${sanitizeLine(bar.id)}`, barText(bar), width));
      }
      if (showLive || (final && step.status === "error")) {
        for (const log of step.logs.slice(-this.#options.logLines)) body.push(paint(truncate(` => => # ${log}`, width), "dim", color));
      }
    }

    if (!final) {
      // Cursor-up cannot reach lines that scrolled off: live frames fit the screen.
      const rows = this.#out.rows;
      const room = rows ? Math.max(1, rows - 2) : Number.POSITIVE_INFINITY;
      return [header, ...body.slice(Math.max(0, body.length - room))];
    }

    const tail: string[] = [];
    const warnings = this.#steps.warnings;
    if (warnings.length > 0) {
      tail.push(paint(`${warnings.length} warning${warnings.length === 1 ? "" : "s"} found:`, "yellow", color));
      for (const w of warnings) {
        const where = warningLocation(w);
        tail.push(paint(truncate(` - ${platformPrefix(w.platform)}${sanitizeLine(w.message)}${where ? ` (${where})` : ""}`, width), "yellow", color));
      }
    }
    tail.push(paint(summary(final, now - this.#startedAt, counts), final === "finished" ? undefined : final === "error" ? "red" : "yellow", color));
    return [header, ...body, ...tail];
  }

  #header(now: number, counts: StepCounts, final: Outcome | undefined, width: number): string {
    const text = `[+] Building ${formatSeconds(now - this.#startedAt)} (${counts.finished}/${counts.total})`;
    if (!final) return paint(truncate(text, width), "bold", this.#options.color);
    const word = { finished: "FINISHED", error: "ERROR", canceled: "CANCELED" }[final];
    const style: Style = final === "finished" ? "blue" : final === "error" ? "red" : "yellow";
    return `${paint(text, "bold", this.#options.color)} ${paint(word, style, this.#options.color)}`;
  }
}

function stepPrefix(step: Step): string {
  if (step.status === "cached") return "CACHED ";
  if (step.status === "error") return "ERROR ";
  if (step.status === "canceled") return "CANCELED ";
  return "";
}

function stepStyle(step: Step): Style | undefined {
  if (step.status === "error") return "red";
  if (step.status === "canceled") return "yellow";
  if (step.status === "done" || step.status === "cached") return "blue";
  return undefined;
}

function stepTime(step: Step, now: number): string {
  if (step.status === "running") return step.startedLocal !== undefined ? formatSeconds(now - step.startedLocal) : "";
  if (step.status === "waiting") return "";
  return step.durationMs !== undefined ? formatSeconds(step.durationMs) : "";
}

/** The bars worth showing: unfinished ones first, most recently updated first. */
function liveBars(step: Step): StepProgress[] {
  const bars = [...step.progress.values()];
  bars.sort((a, b) => Number(a.completed) - Number(b.completed) || b.updatedAt - a.updatedAt);
  return bars.slice(0, MAX_BARS_PER_STEP);
}

function barText(bar: StepProgress): string {
  if (bar.completed) return bar.current > 0 ? `${formatBytes(bar.current)} done` : "done";
  if (bar.total <= 0) return bar.current > 0 ? formatBytes(bar.current) : "";
  const fraction = Math.min(1, bar.current / bar.total);
  const filled = Math.round(fraction * BAR_WIDTH);
  const drawn = filled >= BAR_WIDTH ? "=".repeat(BAR_WIDTH) : `${"=".repeat(filled)}>${" ".repeat(BAR_WIDTH - filled - 1)}`;
  return `${formatBytes(Math.min(bar.current, bar.total))} / ${formatBytes(bar.total)} [${drawn}]`;
}

/** `left` cut to fit, then `right` flush with the right edge. */
function alignRight(left: string, right: string, width: number): string {
  if (!right) return truncate(left, width);
  const room = width - visibleLength(right) - 1;
  const cut = truncate(left, Math.max(1, room));
  return `${cut}${" ".repeat(Math.max(1, width - visibleLength(cut) - visibleLength(right)))}${right}`;
}

function summary(final: Outcome, elapsedMs: number, counts: StepCounts): string {
  const steps = `${counts.total} step${counts.total === 1 ? "" : "s"}, ${counts.cached} cached`;
  const time = formatSeconds(elapsedMs);
  if (final === "finished") return `Built in ${time}: ${steps}`;
  if (final === "canceled") return `Canceled after ${time}: ${steps}`;
  return `Failed after ${time}: ${steps}, ${counts.failed} failed`;
}
