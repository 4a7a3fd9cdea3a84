import type { BuildEvent, Warning } from "../buildkit/events.js";
import { sanitizeLine } from "./format.js";

export type StepStatus = "waiting" | "running" | "done" | "cached" | "error" | "canceled";

/** One bar inside a step: a layer pulled or pushed, a context sent. */
export interface StepProgress {
  id: string;
  current: number;
  total: number;
  completed: boolean;
  /** Local clock (ms) of the last update. */
  updatedAt: number;
}

/** What the renderers know of one vertex. */
export interface Step {
  /** `platform\0digest`: vertexes of different platforms may share a digest. */
  key: string;
  /** 1-based, in order of first appearance: buildx's `#N`. */
  number: number;
  name: string;
  platform: string | undefined;
  status: StepStatus;
  /** Local clock (ms) when the step was last seen starting, for live timers. */
  startedLocal: number | undefined;
  /** The daemon's start time of the current run, for log offsets. */
  startedAt: Date | undefined;
  durationMs: number | undefined;
  error: string | undefined;
  /** The last lines of output, already sanitized. */
  logs: string[];
  progress: Map<string, StepProgress>;
}

export interface StepCounts {
  total: number;
  /** Finished one way or another: done, cached or failed. */
  finished: number;
  cached: number;
  failed: number;
}

/**
 * The state of every vertex of a build, folded from BuildEvents. Shared by
 * the plain and tty renderers so that both number and time steps alike.
 */
export class StepTable {
  readonly #steps = new Map<string, Step>();
  readonly #logLimit: number;
  readonly warnings: Warning[] = [];

  constructor(options: { logLimit: number }) {
    this.#logLimit = options.logLimit;
  }

  /** Folds one event in; returns the step it belongs to (none for a warning). */
  apply(event: BuildEvent, now: number): Step | undefined {
    if (event.type === "warning") {
      this.warnings.push(event);
      return undefined;
    }
    const step = this.#step(event.digest, event.name, event.platform);
    switch (event.type) {
      case "vertex.started":
        // A vertex may run again (BuildKit restarts "load build context").
        step.status = "running";
        step.startedLocal = now;
        step.startedAt = event.startedAt;
        step.durationMs = undefined;
        step.error = undefined;
        break;
      case "vertex.cached":
        step.status = "cached";
        step.durationMs = 0;
        break;
      case "vertex.completed":
        step.status = "done";
        step.durationMs = event.durationMs ?? (step.startedLocal !== undefined ? now - step.startedLocal : undefined);
        break;
      case "vertex.errored":
        step.status = "error";
        step.error = event.error;
        step.durationMs =
          event.startedAt && event.completedAt
            ? event.completedAt.getTime() - event.startedAt.getTime()
            : step.startedLocal !== undefined
              ? now - step.startedLocal
              : undefined;
        break;
      case "log":
        step.logs.push(sanitizeLine(event.line));
        if (step.logs.length > this.#logLimit) step.logs.splice(0, step.logs.length - this.#logLimit);
        break;
      case "progress":
        step.progress.set(event.id, { id: event.id, current: event.current, total: event.total, completed: event.completed, updatedAt: now });
        break;
    }
    return step;
  }

  /** Marks the steps still running as canceled (the build ended without them); returns them. */
  cancelRunning(now: number): Step[] {
    const running = [...this.#steps.values()].filter((s) => s.status === "running");
    for (const step of running) {
      step.status = "canceled";
      if (step.startedLocal !== undefined) step.durationMs = now - step.startedLocal;
    }
    return running;
  }

  get steps(): Step[] {
    return [...this.#steps.values()];
  }

  counts(): StepCounts {
    const counts: StepCounts = { total: 0, finished: 0, cached: 0, failed: 0 };
    for (const step of this.#steps.values()) {
      counts.total++;
      if (step.status === "done" || step.status === "cached" || step.status === "error") counts.finished++;
      if (step.status === "cached") counts.cached++;
      if (step.status === "error") counts.failed++;
    }
    return counts;
  }

  #step(digest: string, name: string, platform: string | undefined): Step {
    const key = `${platform ?? ""}\u0000${digest}`;
    let step = this.#steps.get(key);
    if (!step) {
      step = {
        key,
        number: this.#steps.size + 1,
        name: name || digest,
        platform,
        status: "waiting",
        startedLocal: undefined,
        startedAt: undefined,
        durationMs: undefined,
        error: undefined,
        logs: [],
        progress: new Map(),
      };
      this.#steps.set(key, step);
    } else if (name && step.name === digest) {
      step.name = name;
    }
    return step;
  }
}

/** `Dockerfile:12` or `Dockerfile:12-14`, for a warning that points into a file. */
export function warningLocation(warning: Warning): string {
  const where = warning.location;
  if (!where) return "";
  const lines = where.endLine > where.startLine ? `${where.startLine}-${where.endLine}` : `${where.startLine}`;
  return `${where.file}:${lines}`;
}
