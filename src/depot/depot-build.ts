import type { BuildOptions, BuildResult, Output } from "../buildkit/build-options.js";
import { BuildRun } from "../buildkit/build.js";
import { EventQueue } from "../buildkit/event-queue.js";
import type { BuildEvent } from "../buildkit/events.js";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { type PlatformBuild, pushIndexes } from "./image-index.js";
import type { DepotBuild, DepotBuilds } from "./builds.js";
import { buildOnMachine, type MachineBuild } from "./machine-build.js";
import { checkMultiPlatformOutputs, type PlatformPush, platformOutputs, requestedImageNames } from "./platform-outputs.js";
import { normalizePlatform } from "./platform.js";
import { spoolUploads } from "./upload-spool.js";

const log = createLogger("depot");

export interface DepotBuildOptions extends BuildOptions {
  /** The project to build in. Not needed with `build`. */
  projectId?: string;
  /**
   * A build already registered (`depot.builds.create()`, or one started
   * elsewhere: `depot.builds.get()`, `depot.builds.fromEnvironment()`):
   * built into and finished here instead of a new one.
   */
  build?: DepotBuild;
  /** One Depot machine per platform, each building natively. Default `["linux/amd64"]`. */
  platforms?: string[];
  /** How long to wait for each machine. Default 10 minutes. */
  acquireTimeoutMs?: number;
  /**
   * Also save the image in Depot's registry, under the names and with the
   * credentials Depot gives the build (`<registry>/<project>:<build id>`,
   * plus `saveTags`); get it back with `depot.pull()`/`depot.push()`.
   */
  save?: boolean;
  /** More tags for the saved image, e.g. `["latest"]`. */
  saveTags?: string[];
}

export interface DepotBuildResult extends BuildResult {
  buildId: string;
  buildUrl: string;
  /** The project Depot ran the build in. */
  projectId: string;
  /** Each platform's own result. */
  platforms: PlatformBuild[];
  /** With `save`: the saved image (`reference` is the build's own name in Depot's registry) and all its names. */
  saved?: { reference: string; tags: string[] };
}

/**
 * Registers a Depot build, builds each platform on its own machine, pushes
 * one image index for several platforms, reports the result to Depot and
 * releases every machine, on every path.
 */
export function startDepotBuild(depot: { builds: Pick<DepotBuilds, "create"> }, options: DepotBuildOptions): BuildRun<DepotBuildResult> {
  const events = new EventQueue<BuildEvent>();
  const result = runDepotBuild(depot, options, (event) => events.push(event))
    .catch((err: unknown) => {
      // Whatever broke (a spooled upload's stream, say), the caller gets one of our errors.
      throw BuildKitNodeError.from(err, "depot build");
    })
    .finally(() => events.end());
  return new BuildRun("", events, result);
}

async function runDepotBuild(depot: { builds: Pick<DepotBuilds, "create"> }, options: DepotBuildOptions, emit: (event: BuildEvent) => void): Promise<DepotBuildResult> {
  const { projectId, build: given, platforms = ["linux/amd64"], acquireTimeoutMs, save = false, saveTags = [], signal, ...requested } = options;
  if (platforms.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", "platforms must name at least one platform");
  // A platform Depot has no machine for is refused before a build is registered for it.
  for (const platform of platforms) normalizePlatform(platform);
  if (!given && !projectId) throw new BuildKitNodeError("INVALID_ARGUMENT", "depot.build: projectId is required (or a build to build into)");
  if (saveTags.length > 0 && !save) throw new BuildKitNodeError("INVALID_ARGUMENT", "depot.build: saveTags needs save: true");
  if (signal?.aborted) throw new AbortError("the build was aborted", { cause: signal.reason });
  const multi = platforms.length > 1;
  if (multi) checkMultiPlatformOutputs([...(requested.outputs ?? []), ...(save ? [{ type: "image" as const, name: "saved", push: true }] : [])]);

  // Every platform reads the whole context: an upload is spooled once.
  const uploads = multi ? await spoolUploads(requested, signal) : undefined;
  const build = await (given ? Promise.resolve(given) : register(depot, projectId!, requested.outputs ?? [], { save, saveTags }, signal)).catch(async (err: unknown) => {
    await uploads?.remove();
    throw err;
  });
  log(`build ${build.id}: ${platforms.join(", ")}`);
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  // Aborted while the build was being registered, after that call had answered: stop here too.
  if (signal?.aborted) onAbort();
  let failure: unknown;
  try {
    const savedTags = save ? await build.saveNames(saveTags, { signal: controller.signal }) : [];
    const outputs = withSavedTags(requested.outputs ?? [], savedTags);
    const buildOptions: BuildOptions = { ...requested, outputs, registryAuth: build.registryAuth(requested.registryAuth) };
    const perPlatform = await Promise.all(
      platforms.map(async (platform) => {
        try {
          const machine = await build.acquireMachine(platform, { signal: controller.signal, ...(acquireTimeoutMs ? { timeoutMs: acquireTimeoutMs } : {}) });
          return await buildOnMachine(machine, {
            platform,
            options: buildOptions,
            ...(uploads ? { replayUploads: () => uploads.replay() } : {}),
            ...(multi ? { outputsFor: (push: PlatformPush) => platformOutputs(outputs, platform, push) } : {}),
            signal: controller.signal,
            emit,
          });
        } catch (err) {
          controller.abort(err); // one platform failed: stop the others
          throw err;
        }
      }),
    );
    const result = multi
      ? await multiPlatformResult(build, requestedImageNames(outputs), perPlatform, buildOptions, controller.signal)
      : singleResult(build, perPlatform[0]!);
    return { ...result, projectId: build.projectId, ...(savedTags.length > 0 ? { saved: { reference: savedTags[0]!, tags: savedTags } } : {}) };
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

/** CreateBuild, telling Depot what the build makes (its UI shows it) and whether to save it. */
function register(
  depot: { builds: Pick<DepotBuilds, "create"> },
  projectId: string,
  outputs: Output[],
  save: { save: boolean; saveTags: string[] },
  signal: AbortSignal | undefined,
): Promise<DepotBuild> {
  const input = {
    projectId,
    tags: requestedImageNames(outputs),
    push: outputs.some((o) => o.type === "image" && o.push),
    load: outputs.some((o) => "load" in o),
    ...save,
  };
  return depot.builds.create(input, signal ? { signal } : {});
}

/** The user's outputs, with the saved image's names pushed too (by the user's image push when there is one: one export). */
function withSavedTags(outputs: Output[], savedTags: string[]): Output[] {
  if (savedTags.length === 0) return outputs;
  const push = outputs.findIndex((o) => o.type === "image" && o.push && !o.pushByDigest);
  if (push < 0) return [...outputs, { type: "image", name: savedTags.join(","), push: true }];
  return outputs.map((o, i) => (i === push && o.type === "image" ? { ...o, name: `${o.name},${savedTags.join(",")}` } : o));
}

function singleResult(build: { id: string; url: string }, only: MachineBuild): Omit<DepotBuildResult, "projectId"> {
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
): Promise<Omit<DepotBuildResult, "projectId">> {
  const insecure = (options.outputs ?? []).some((o) => o.type === "image" && o.insecure);
  const pushed = await pushIndexes(imageNames, perPlatform, { registryAuth: options.registryAuth, insecure }, signal);
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
