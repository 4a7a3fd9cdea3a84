import type { BuildEvent } from "../buildkit/events.js";

/**
 * Shows a build's progress. Feed it every event of `run.events`, then call
 * `done()` once the run settled (with the error it rejected with, if any):
 * the tty view draws its final frame and summary, timers stop.
 */
export interface ProgressRenderer {
  event(event: BuildEvent): void;
  done(outcome?: { error?: unknown }): void;
}

/** The error an outcome carries says the build was aborted (an AbortError, code CANCELED). */
export function isCanceled(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { name, code } = error as { name?: unknown; code?: unknown };
  return name === "AbortError" || code === "CANCELED";
}
