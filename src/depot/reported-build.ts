import type { BuildOptions, BuildResult } from "../buildkit/build-options.js";
import { BuildRun } from "../buildkit/build.js";
import type { BuildKitClient } from "../buildkit/client.js";
import { EventQueue } from "../buildkit/event-queue.js";
import type { BuildEvent } from "../buildkit/events.js";
import type { StatusReporter } from "./status-reporter.js";
import { StepTimings } from "./step-timings.js";

/** Where a machine's builds report: Depot's UI (status as it happens) and the build's step timings. */
export interface BuildReporting {
  statusReporter(): StatusReporter;
  /** Keeps a finished solve's steps for the ReportTimings the build sends when it is finished. */
  recordSteps(timings: StepTimings): void;
}

/**
 * A build on a machine's BuildKit whose status goes to Depot as it happens
 * and whose steps are kept for the build's timings. The relay never fails or
 * holds up the build beyond its bounded flush (see StatusReporter).
 */
export function reportedBuild(client: Promise<BuildKitClient>, options: BuildOptions, reporting: BuildReporting): BuildRun {
  const events = new EventQueue<BuildEvent>();
  const result = run(client, options, reporting, (event) => events.push(event)).finally(() => events.end());
  return new BuildRun("", events, result);
}

async function run(client: Promise<BuildKitClient>, options: BuildOptions, reporting: BuildReporting, emit: (event: BuildEvent) => void): Promise<BuildResult> {
  const bk = await client;
  const reporter = reporting.statusReporter();
  const timings = new StepTimings();
  try {
    const build = bk.build({
      ...options,
      onStatus: (status) => {
        reporter.push(status);
        timings.update(status);
        options.onStatus?.(status);
      },
    });
    for await (const event of build.events) emit(event);
    return await build;
  } finally {
    await reporter.close();
    reporting.recordSteps(timings);
  }
}
