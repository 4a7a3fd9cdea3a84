import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { BuildStep } from "../gen/depot/cli/v1/build_pb.js";
import type { StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";

/** More steps than any real build has; past it, steps are not recorded (memory stays bounded). */
const MAX_STEPS = 10_000;
const MAX_ERROR_LENGTH = 2_000;

interface StepState {
  name: string;
  inputs: string[];
  cached: boolean;
  startedMs?: number;
  completedMs?: number;
  error?: string;
}

/**
 * The steps of one solve with their times, from BuildKit's status updates
 * (each update carries a vertex's whole state): what ReportTimings tells
 * Depot at the end of a build, as the depot CLI reports it.
 */
export class StepTimings {
  readonly #steps = new Map<string, StepState>();

  update(status: StatusResponse): void {
    for (const v of status.vertexes) {
      let step = this.#steps.get(v.digest);
      if (!step) {
        if (this.#steps.size >= MAX_STEPS) continue;
        step = { name: v.name, inputs: [...v.inputs], cached: false };
        this.#steps.set(v.digest, step);
      }
      step.cached = v.cached;
      if (v.started) step.startedMs = timestampMs(v.started);
      if (v.completed) step.completedMs = timestampMs(v.completed);
      if (v.error) step.error = v.error.slice(0, MAX_ERROR_LENGTH);
    }
  }

  /** The steps that started, in the order they started; `platform` (if given) prefixes each name. */
  steps(platform?: string): BuildStep[] {
    return [...this.#steps.entries()]
      .filter(([, s]) => s.startedMs !== undefined || s.cached)
      .sort(([, a], [, b]) => (a.startedMs ?? 0) - (b.startedMs ?? 0))
      .map(([, s]) => {
        const durationMs = s.startedMs !== undefined && s.completedMs !== undefined ? Math.max(0, s.completedMs - s.startedMs) : 0;
        return {
          $typeName: "depot.cli.v1.BuildStep",
          ...(s.startedMs !== undefined ? { startTime: timestampFromMs(s.startedMs) } : {}),
          durationMs: Math.min(durationMs, 2 ** 31 - 1),
          name: platform ? `[${platform}] ${s.name}` : s.name,
          ...(s.error ? { error: s.error } : {}),
          cached: s.cached,
          inputDigests: s.inputs,
          ancestorDigests: [],
        } satisfies BuildStep;
      });
  }
}
