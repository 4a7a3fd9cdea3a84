import type { BuildOptions, BuildResult } from "../buildkit/build-options.js";
import { BuildRun } from "../buildkit/build.js";
import { EventQueue } from "../buildkit/event-queue.js";
import type { BuildEvent } from "../buildkit/events.js";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { type PlatformBuild, pushIndexes } from "./image-index.js";
import { type BuildMachine, buildOnMachine, type MachineBuild } from "./machine-build.js";
import { checkMultiPlatformOutputs, platformOutputs, requestedImageNames } from "./platform-outputs.js";
import { spoolUploads } from "./upload-spool.js";

const log = createLogger("depot");

/** What the orchestration needs from Depot: registering a build, and its machines. */
export interface DepotBuildHost {
  builds: {
    create(input: { projectId: string; tags?: string[]; push?: boolean; load?: boolean }, options?: { signal?: AbortSignal }): Promise<{
      id: string;
      url: string;
      acquireMachine(platform: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<BuildMachine>;
      finish(error?: unknown): Promise<void>;
    }>;
  };
}

export interface DepotBuildOptions extends BuildOptions {
  projectId: string;
  /** One Depot machine per platform, each building natively. Default `["linux/amd64"]`. */
  platforms?: string[];
  /** How long to wait for each machine. Default 10 minutes. */
  acquireTimeoutMs?: number;
}

export interface DepotBuildResult extends BuildResult {
  buildId: string;
  buildUrl: string;
  /** Each platform's own result. */
  platforms: PlatformBuild[];
}

/**
 * Registers a Depot build, builds each platform on its own machine, pushes
 * one image index for several platforms, reports the result to Depot and
 * releases every machine, on every path.
 */
export function startDepotBuild(depot: DepotBuildHost, options: DepotBuildOptions): BuildRun<DepotBuildResult> {
  const events = new EventQueue<BuildEvent>();
  const result = runDepotBuild(depot, options, (event) => events.push(event)).finally(() => events.end());
  return new BuildRun("", events, result);
}

async function runDepotBuild(depot: DepotBuildHost, options: DepotBuildOptions, emit: (event: BuildEvent) => void): Promise<DepotBuildResult> {
  const { projectId, platforms = ["linux/amd64"], acquireTimeoutMs, signal, ...buildOptions } = options;
  if (platforms.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "platforms must name at least one platform");
  if (signal?.aborted) throw new AbortError("the build was aborted", { cause: signal.reason });
  const outputs = buildOptions.outputs ?? [];
  const multi = platforms.length > 1;
  if (multi) checkMultiPlatformOutputs(outputs);
  const imageNames = requestedImageNames(outputs);

  // Every platform reads the whole context: an upload is spooled once.
  const uploads = multi ? await spoolUploads(buildOptions, signal) : undefined;

  const build = await depot.builds
    .create(
      { projectId, tags: imageNames, push: outputs.some((o) => o.type === "image" && o.push), load: outputs.some((o) => "load" in o) },
      signal ? { signal } : {},
    )
    .catch(async (err: unknown) => {
      await uploads?.remove();
      throw err;
    });
  log(`build ${build.id}: ${platforms.join(", ")}`);
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let failure: unknown;
  try {
    const perPlatform = await Promise.all(
      platforms.map(async (platform) => {
        try {
          const machine = await build.acquireMachine(platform, { signal: controller.signal, ...(acquireTimeoutMs ? { timeoutMs: acquireTimeoutMs } : {}) });
          return await buildOnMachine(machine, {
            platform,
            options: { ...buildOptions, ...uploads?.replay() },
            ...(multi ? { outputsFor: (push) => platformOutputs(outputs, platform, push) } : {}),
            signal: controller.signal,
            emit,
          });
        } catch (err) {
          controller.abort(err); // one platform failed: stop the others
          throw err;
        }
      }),
    );
    return multi ? await multiPlatformResult(build, imageNames, perPlatform, buildOptions, controller.signal) : singleResult(build, perPlatform[0]!);
  } catch (err) {
    failure = signal?.aborted ? new AbortError("the build was aborted", { cause: signal.reason }) : err;
    throw failure;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    // Exactly once, whatever happened; its own timeout, not the build's signal.
    await build.finish(failure).catch((err: unknown) => log(`finishing build ${build.id}: ${(err as Error).message}`));
    await uploads?.remove();
  }
}

function singleResult(build: { id: string; url: string }, only: MachineBuild): DepotBuildResult {
  const { platform, result } = only;
  return { ...result, buildId: build.id, buildUrl: build.url, platforms: [{ platform, result }] };
}

/** The platforms' images are in the registry: one index under each requested name names them. */
async function multiPlatformResult(
  build: { id: string; url: string },
  imageNames: string[],
  perPlatform: MachineBuild[],
  options: BuildOptions,
  signal: AbortSignal,
): Promise<DepotBuildResult> {
  const pushed = await pushIndexes(imageNames, perPlatform, options.registryAuth, signal);
  return {
    ref: perPlatform.map((p) => p.result.ref).join(","),
    ...(pushed[0] ? { digest: pushed[0].digest } : {}),
    exporterResponse: {},
    pushed,
    buildId: build.id,
    buildUrl: build.url,
    platforms: perPlatform.map(({ platform, result }) => ({ platform, result })),
  };
}
