// What a build's BuildKit status reports (ReportStatus, ReportStatusStream)
// tell the local Depot: its steps, in order of first sight, with their times,
// cache hits, errors and logs, as Depot's web UI would show them. Logs are
// bounded per build so a chatty build cannot grow the server without limit.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { StatusResponse } from "../../gen/moby/buildkit/v1/control_pb.js";
import type { LocalBuildRecord, LocalBuildStep } from "./types.js";

export const DEFAULT_MAX_LOG_BYTES_PER_BUILD = 16 * 1024 * 1024;

interface BuildSteps {
  byDigest: Map<string, LocalBuildStep>;
  logBytes: number;
}

export class StatusRecorder {
  private readonly perBuild = new WeakMap<LocalBuildRecord, BuildSteps>();

  constructor(private readonly maxLogBytesPerBuild: number) {}

  /** Folds one request's worth of StatusResponse messages into the build's steps. */
  record(build: LocalBuildRecord, statuses: readonly StatusResponse[]): void {
    build.statusReports.requests++;
    build.statusReports.statuses += statuses.length;
    const steps = this.stepsOf(build);
    for (const status of statuses) {
      for (const vertex of status.vertexes) {
        const step = this.step(build, steps, vertex.digest);
        if (vertex.name) step.name = vertex.name;
        if (vertex.inputs.length > 0) step.inputs = [...vertex.inputs];
        step.cached ||= vertex.cached;
        if (vertex.started) step.startedAt = timestampDate(vertex.started);
        if (vertex.completed) step.completedAt = timestampDate(vertex.completed);
        if (vertex.error) step.error = vertex.error;
      }
      for (const log of status.logs) {
        const step = this.step(build, steps, log.vertex);
        if (steps.logBytes + log.msg.byteLength > this.maxLogBytesPerBuild) {
          build.statusReports.droppedLogBytes += log.msg.byteLength;
          continue;
        }
        steps.logBytes += log.msg.byteLength;
        step.logs.push({
          message: Buffer.from(log.msg).toString("utf8"),
          at: log.timestamp ? timestampDate(log.timestamp) : new Date(),
          stream: Number(log.stream),
        });
      }
    }
  }

  private stepsOf(build: LocalBuildRecord): BuildSteps {
    let steps = this.perBuild.get(build);
    if (!steps) this.perBuild.set(build, (steps = { byDigest: new Map(build.steps.map((s) => [s.digest, s])), logBytes: 0 }));
    return steps;
  }

  /** A log can arrive before its vertex: the step is made then and named later. */
  private step(build: LocalBuildRecord, steps: BuildSteps, digest: string): LocalBuildStep {
    let step = steps.byDigest.get(digest);
    if (!step) {
      step = { digest, name: "", inputs: [], cached: false, logs: [] };
      steps.byDigest.set(digest, step);
      build.steps.push(step);
    }
    return step;
  }
}
