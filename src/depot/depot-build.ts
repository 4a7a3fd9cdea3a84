import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AbortError, BuildKitNodeError } from "../errors.js";
import type { BuildOptions, BuildResult, Output } from "../buildkit/build-options.js";
import { BuildRun } from "../buildkit/build.js";
import type { BuildKitClient } from "../buildkit/client.js";
import { EventQueue } from "../buildkit/event-queue.js";
import type { BuildEvent } from "../buildkit/events.js";
import { createLogger } from "../log.js";
import { parseImageReference, withDigest } from "../registry/reference.js";
import { RegistryClient } from "../registry/registry-client.js";

const log = createLogger("depot");

/** What the orchestration needs from Depot: registering a build, and its machines. */
export interface DepotBuildHost {
  builds: {
    create(input: { projectId: string; tags?: string[]; push?: boolean; load?: boolean }, options?: { signal?: AbortSignal }): Promise<{
      id: string;
      url: string;
      acquireMachine(platform: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<{
        readonly signal: AbortSignal;
        connect(options?: { signal?: AbortSignal }): Promise<BuildKitClient>;
        release(): Promise<void>;
      }>;
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
  platforms: { platform: string; result: BuildResult }[];
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
  const imageNames = outputs.flatMap((o) => (o.type === "image" ? o.name.split(",").map((n) => n.trim()) : []));

  // Every platform reads the context: an upload stream is kept once on disk
  // and each machine's build reads its own copy of it.
  const uploads = multi ? await keepUploads(buildOptions, signal) : undefined;

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
      platforms.map((platform) =>
        buildOnMachine(
          build,
          platform,
          { ...buildOptions, ...uploads?.replay(), outputs: multi ? platformOutputs(outputs, platform) : outputs },
          acquireTimeoutMs,
          controller,
          emit,
        ).catch((err: unknown) => {
          controller.abort(err); // one platform failed: stop the others
          throw err;
        }),
      ),
    );
    const pushed = multi ? await pushIndexes(outputs, perPlatform, buildOptions, controller.signal) : perPlatform[0]!.result.pushed;
    const digest = multi ? pushed[0]?.digest : perPlatform[0]!.result.digest;
    return {
      ref: perPlatform.map((p) => p.result.ref).join(","),
      ...(digest ? { digest } : {}),
      exporterResponse: multi ? {} : perPlatform[0]!.result.exporterResponse,
      pushed,
      buildId: build.id,
      buildUrl: build.url,
      platforms: perPlatform,
    };
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

/**
 * Writes the `{ tar }` contexts (main and named) to a temp dir once, so
 * that each platform's build can read them from the start.
 */
async function keepUploads(
  options: BuildOptions,
  signal: AbortSignal | undefined,
): Promise<{ replay(): Partial<Pick<BuildOptions, "context" | "extraContexts">>; remove(): Promise<void> }> {
  const inputs = { context: options.context, ...Object.fromEntries(Object.entries(options.extraContexts ?? {}).map(([k, v]) => [`extra:${k}`, v])) };
  const uploads = Object.entries(inputs).filter((entry): entry is [string, { tar: Readable | AsyncIterable<Uint8Array> }] => typeof entry[1] === "object" && "tar" in entry[1]);
  if (uploads.length === 0) return { replay: () => ({}), remove: async () => {} };
  const dir = await mkdtemp(join(tmpdir(), "buildkit-node-upload-"));
  try {
    const files = new Map<string, string>();
    for (const [key, { tar }] of uploads) {
      const file = join(dir, `${files.size}.tar`);
      await pipeline(tar, createWriteStream(file), ...(signal ? [{ signal }] : []));
      files.set(key, file);
    }
    const reopen = (key: string, input: unknown) => (files.has(key) ? { tar: createReadStream(files.get(key)!) } : input);
    return {
      replay: () => ({
        context: reopen("context", options.context) as BuildOptions["context"],
        ...(options.extraContexts
          ? { extraContexts: Object.fromEntries(Object.entries(options.extraContexts).map(([k, v]) => [k, reopen(`extra:${k}`, v) as typeof v])) }
          : {}),
      }),
      remove: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw signal?.aborted ? new AbortError("the build was aborted while its context was read", { cause: signal.reason }) : err;
  }
}

async function buildOnMachine(
  build: Awaited<ReturnType<DepotBuildHost["builds"]["create"]>>,
  platform: string,
  options: BuildOptions,
  acquireTimeoutMs: number | undefined,
  controller: AbortController,
  emit: (event: BuildEvent) => void,
): Promise<{ platform: string; result: BuildResult }> {
  const machine = await build.acquireMachine(platform, { signal: controller.signal, ...(acquireTimeoutMs ? { timeoutMs: acquireTimeoutMs } : {}) });
  try {
    const bk = await machine.connect({ signal: controller.signal });
    const run = bk.build({ ...options, platforms: [platform], signal: AbortSignal.any([controller.signal, machine.signal]) });
    for await (const event of run.events) emit({ ...event, platform });
    return { platform, result: await run };
  } catch (err) {
    // Depot ended the machine (cancels_at): say so rather than "aborted".
    if (machine.signal.aborted && !controller.signal.aborted) {
      throw new BuildKitNodeError("CANCELED", `the ${platform} machine was ended by Depot: ${String(machine.signal.reason)}`, { cause: err });
    }
    throw err;
  } finally {
    await machine.release();
  }
}

/** Several platforms can go to a registry (one index) or to per-platform local directories. */
function checkMultiPlatformOutputs(outputs: Output[]): void {
  for (const output of outputs) {
    if (output.type === "image" && output.push) continue;
    if (output.type === "local") continue;
    throw new BuildKitNodeError(
      "INVALID_ARGUMENT",
      `a ${output.type} output${"load" in output ? " with load" : ""} cannot hold several platforms; push an image, or build one platform at a time`,
    );
  }
}

/**
 * One platform's outputs: images go to `<name>-<os>-<arch>` tags (what the
 * index then points at), local directories to a subdirectory per platform.
 */
function platformOutputs(outputs: Output[], platform: string): Output[] {
  const suffix = platform.replaceAll("/", "-");
  return outputs.map((output) => {
    if (output.type === "image") return { ...output, name: output.name.split(",").map((n) => platformTag(n.trim(), suffix)).join(",") };
    if (output.type === "local") return { ...output, dest: `${output.dest}/${platform.replaceAll("/", "_")}` };
    return output;
  });
}

function platformTag(name: string, suffix: string): string {
  const { reference } = parseImageReference(name);
  const base = name.includes("@") ? name.slice(0, name.indexOf("@")) : name.endsWith(`:${reference}`) ? name.slice(0, -reference.length - 1) : name;
  return `${base}:${reference}-${suffix}`;
}

/** Puts one index (manifest list) per requested image name, pointing at each platform's image. */
async function pushIndexes(
  outputs: Output[],
  perPlatform: { platform: string; result: BuildResult }[],
  options: BuildOptions,
  signal: AbortSignal,
): Promise<{ name: string; digest?: string }[]> {
  const pushed: { name: string; digest?: string }[] = [];
  for (const output of outputs) {
    if (output.type !== "image" || !output.push) continue;
    const names = output.name.split(",").map((n) => n.trim());
    const registry = new RegistryClient({
      auth: options.registryAuth ?? "docker-config",
      ...(output.insecure ? { insecure: names.map((name) => parseImageReference(name).host) } : {}),
    });
    for (const name of names) {
      const sources = perPlatform.map(({ platform, result }) => {
        const digest = result.pushed.find((p) => p.name === platformTag(name, platform.replaceAll("/", "-")))?.digest;
        if (!digest) throw new BuildKitNodeError("INTERNAL", `no digest was reported for the ${platform} image of ${name}`);
        return { image: withDigest(parseImageReference(name), digest), platform };
      });
      const { descriptor } = await registry.pushIndex(name, sources, { signal });
      log(`pushed index ${name} ${descriptor.digest} (${perPlatform.map((p) => p.platform).join(", ")})`);
      pushed.push({ name, digest: descriptor.digest });
    }
  }
  return pushed;
}
