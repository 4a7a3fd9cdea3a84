// Progress renderers for BuildEvents, as buildx shows them: `tty` (a live
// view redrawn in place), `plain` (one line per event), `rawjson` (the events
// as line-delimited JSON), `quiet`; `auto` picks tty or plain.
import { BuildKitNodeError } from "../errors.js";
import { PlainRenderer } from "./plain.js";
import { RawJsonRenderer } from "./rawjson.js";
import type { ProgressRenderer } from "./renderer.js";
import { TtyRenderer } from "./tty.js";

export type { ProgressRenderer } from "./renderer.js";

export const PROGRESS_MODES = ["auto", "tty", "plain", "rawjson", "quiet"] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

export interface RendererOptions {
  /** Read for `auto` (`NO_COLOR`, `CI`, `TERM`), colors and `BUILDKIT_TTY_LOG_LINES`. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** tty: lines of output shown under each running step. Default `BUILDKIT_TTY_LOG_LINES` or 6. */
  logLines?: number;
  /** tty: at most one frame per this many ms. Default 100 (10 frames a second). */
  frameIntervalMs?: number;
  /** tty: SGR colors. Default: on unless `NO_COLOR` is set. */
  color?: boolean;
}

/**
 * The mode `auto` stands for on `out`: `tty` when `out` is a terminal and
 * neither `NO_COLOR` nor `CI` is set (and `TERM` is not `dumb`), else `plain`.
 * Other modes are returned as they are.
 */
export function resolveProgressMode(mode: ProgressMode, out: NodeJS.WritableStream, env: NodeJS.ProcessEnv = process.env): Exclude<ProgressMode, "auto"> {
  if (mode !== "auto") return mode;
  const isTty = (out as { isTTY?: boolean }).isTTY === true;
  return isTty && !env.NO_COLOR && !env.CI && env.TERM !== "dumb" ? "tty" : "plain";
}

/**
 * A renderer writing to `out` (usually `process.stderr`). Feed it each event
 * of `run.events`; call `done({ error })` once the run has settled.
 *
 * ```ts
 * const renderer = createRenderer("auto", process.stderr);
 * const run = bk.build(options);
 * for await (const event of run.events) renderer.event(event);
 * try { await run; renderer.done(); } catch (error) { renderer.done({ error }); throw error; }
 * ```
 */
export function createRenderer(mode: ProgressMode, out: NodeJS.WritableStream, options: RendererOptions = {}): ProgressRenderer {
  const env = options.env ?? process.env;
  switch (resolveProgressMode(mode, out, env)) {
    case "tty":
      return new TtyRenderer(out, {
        color: options.color ?? !env.NO_COLOR,
        logLines: options.logLines ?? logLinesFrom(env),
        frameIntervalMs: options.frameIntervalMs ?? 100,
      });
    case "plain":
      return new PlainRenderer(out);
    case "rawjson":
      return new RawJsonRenderer(out);
    case "quiet":
      return { event() {}, done() {} };
    default:
      throw new BuildKitNodeError("INVALID_ARGUMENT", `unknown progress mode "${String(mode)}"; use one of ${PROGRESS_MODES.join(", ")}`);
  }
}

function logLinesFrom(env: NodeJS.ProcessEnv): number {
  const n = env.BUILDKIT_TTY_LOG_LINES ? Number(env.BUILDKIT_TTY_LOG_LINES) : Number.NaN;
  return Number.isInteger(n) && n >= 0 ? n : 6;
}
