import type { BuildOptions, BuildResult, Output } from "../buildkit/build-options.js";
import type { BuildRun } from "../buildkit/build.js";
import type { BuildKitClient } from "../buildkit/client.js";
import type { BuildEvent } from "../buildkit/events.js";
import { BuildError, BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import type { PlatformBuild } from "./image-index.js";
import type { PlatformPush } from "./platform-outputs.js";
import { hasUploads, type ReplayedInputs } from "./upload-spool.js";

const log = createLogger("depot");

/** A platform whose push a registry refused is built (from cache) and pushed again, at most this many times in all. */
export const PUSH_ATTEMPTS = 3;

/** What building on one machine needs of it. */
export interface BuildMachine {
  /** Aborted when the machine is released or Depot ends it. */
  readonly signal: AbortSignal;
  connect(options?: { signal?: AbortSignal }): Promise<BuildKitClient>;
  /** A build whose status Depot's UI sees (see DepotMachine.build). */
  build(options: BuildOptions, connectOptions?: { signal?: AbortSignal }): BuildRun;
  release(): Promise<void>;
}

export interface MachineBuildOptions {
  platform: string;
  /** The build's options, outputs as asked (before they are made per-platform). */
  options: BuildOptions;
  /**
   * Fresh reads of the uploaded contexts for each attempt (a spooled upload).
   * Without it, a build whose context is an upload stream is not pushed
   * again: the stream was read by the first attempt.
   */
  replayUploads?: () => ReplayedInputs;
  /**
   * Turns the outputs into this platform's, once it is known how the
   * machine's BuildKit can push (one platform only: `undefined`).
   */
  outputsFor?: (push: PlatformPush) => Output[];
  /** Aborted when the whole Depot build stops (another platform failed, or the caller aborted). */
  signal: AbortSignal;
  emit(event: BuildEvent): void;
}

export interface MachineBuild extends PlatformBuild {
  /** How this platform's image was pushed (multi-platform builds only). */
  push?: PlatformPush;
}

/**
 * Builds one platform on its machine: connects, picks how its image is
 * pushed (by digest where the BuildKit can), runs the build with events
 * tagged by platform, and builds again when the registry refused the push
 * (a digest mismatch or a 5xx, as concurrent pushes of one blob into one
 * repository can meet). Always releases the machine.
 */
export async function buildOnMachine(machine: BuildMachine, build: MachineBuildOptions): Promise<MachineBuild> {
  const { platform, signal, emit } = build;
  try {
    const bk = await machine.connect({ signal });
    const push = build.outputsFor ? ((await bk.features()).imageExporter ? "by-digest" : "helper-tags") : undefined;
    const options: BuildOptions = { ...build.options, ...(push && build.outputsFor ? { outputs: build.outputsFor(push) } : {}), platforms: [platform] };
    const attempts = build.replayUploads || !hasUploads(options) ? PUSH_ATTEMPTS : 1;
    for (let attempt = 1; ; attempt++) {
      const run = machine.build({ ...options, ...build.replayUploads?.(), signal: AbortSignal.any([signal, machine.signal]) }, { signal });
      for await (const event of run.events) emit({ ...event, platform });
      try {
        const result: BuildResult = await run;
        return { platform, result, ...(push ? { push } : {}) };
      } catch (err) {
        if (attempt >= attempts || !isRefusedPush(err) || signal.aborted || machine.signal.aborted) throw err;
        log(`the registry refused the ${platform} push (attempt ${attempt} of ${attempts}); pushing again`);
        emit({ type: "warning", digest: "", message: `the registry refused the ${platform} image's push; pushing it again`, detail: [(err as Error).message], platform });
      }
    }
  } catch (err) {
    // Depot ended the machine (cancels_at): say so rather than "aborted".
    if (machine.signal.aborted && !signal.aborted) {
      throw new BuildKitNodeError("CANCELED", `the ${platform} machine was ended by Depot: ${String(machine.signal.reason)}`, { cause: err });
    }
    throw err;
  } finally {
    await machine.release();
  }
}

/**
 * A push the registry turned down in a way another try can fix: the upload's
 * digest did not match (two pushes of one blob crossed) or it answered 5xx.
 * Any other failure (the build's own, a refused login) is final.
 */
export function isRefusedPush(err: unknown): boolean {
  // BuildKit's own push fails the solve; dockerd's Engine push fails after it.
  const message = err instanceof BuildError ? err.daemonMessage : err instanceof BuildKitNodeError && err.code === "UNKNOWN" ? err.message : "";
  if (!/\bpush/i.test(message)) return false;
  return /digest (invalid|mismatch)|DIGEST_INVALID|did not match uploaded content|unexpected commit digest|unexpected (HTTP )?status[^:]*: 5\d\d|\b5\d\d (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)\b/i.test(message);
}
