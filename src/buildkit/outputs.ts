import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { PassThrough, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BuildKitNodeError } from "../errors.js";
import { parseImageReference } from "../registry/reference.js";
import type { OutputTarget } from "../session/filesend/targets.js";
import type { Output } from "./build-options.js";
import { type DaemonKind, localDockerSocket } from "./daemon-kind.js";
import { DockerEngine } from "./docker-engine.js";
import type { BuildEvent } from "./events.js";

export interface Exporter {
  type: string;
  attrs: Record<string, string>;
}

export interface FinishContext {
  exporterResponse: Record<string, string>;
  credentials(host: string): Promise<{ username?: string; password?: string; identityToken?: string } | undefined>;
  emit(event: BuildEvent): void;
  signal: AbortSignal;
}

/**
 * How the requested outputs become exporters in the SolveRequest, FileSend
 * targets for what streams back to the client, and steps the client runs
 * after the solve (a push or save through the Docker Engine, for dockerd).
 */
export interface ExportPlan {
  exporters: Exporter[];
  targets: Map<number, OutputTarget>;
  /** Runs the client's steps once the solve succeeded. */
  finish(context: FinishContext): Promise<{ pushed: { name: string; digest?: string }[] }>;
  /** Releases what the plan started (a pending Docker load) after a failure. */
  abandon(): void;
  /** Why a client-side step (a Docker load) failed during the solve, if one did: the real cause of the solve's failure. */
  clientFailure(): unknown;
}

/** The daemon a plan is for. */
export interface PlanTarget {
  /** As the caller gave it, for messages. */
  address: string;
  daemon: DaemonKind;
  signal?: AbortSignal;
}

export function planOutputs(outputs: Output[], { address, daemon, signal }: PlanTarget): ExportPlan {
  const exporters: Exporter[] = [];
  const targets = new Map<number, OutputTarget>();
  const after: ((context: FinishContext) => Promise<{ name: string; digest?: string }[]>)[] = [];
  const abandons: (() => void)[] = [];
  let clientFailure: unknown;
  /** The Engine of the dockerd whose BuildKit this is: named by the caller, or the step is refused before anything runs. */
  const ownEngine = (step: string): DockerEngine => {
    if (daemon.dockerEngine) return new DockerEngine(daemon.dockerEngine);
    throw new BuildKitNodeError(
      "INVALID_ARGUMENT",
      `${address} is a dockerd's BuildKit, which keeps images in that dockerd; ${step} goes through that dockerd's Engine API, ` +
        `and which dockerd it is cannot be known from here: connect with docker:// (or docker:///path/to/docker.sock), ` +
        `or pass connect("${address}", { dockerEngine: "unix:///path/to/docker.sock" }) naming its Engine socket`,
    );
  };

  for (const output of outputs) {
    const index = exporters.length;
    switch (output.type) {
      case "image": {
        const names = splitNames(output.name);
        if (output.pushByDigest) {
          if (!output.push) invalid("pushByDigest needs push: true");
          if (daemon.embeddedInDocker) {
            throw new BuildKitNodeError("UNIMPLEMENTED", "dockerd's embedded BuildKit cannot push by digest (its Engine API pushes tags); use a standalone buildkitd");
          }
          exporters.push({ type: "image", attrs: pushByDigestAttrs(names, output.insecure) });
          after.push(async ({ exporterResponse }) => pushedByDigest(names, exporterResponse));
          break;
        }
        if (daemon.embeddedInDocker) {
          // dockerd stores the image (moby exporter), then pushes it itself.
          exporters.push({ type: "moby", attrs: { name: names.join(",") } });
          if (output.push) {
            const engine = ownEngine(`pushing ${names.join(", ")}`);
            after.push((context) => pushThroughEngine(engine, names, context));
          }
        } else {
          exporters.push({
            type: "image",
            attrs: { name: names.join(","), push: String(Boolean(output.push)), ...(output.insecure ? { "registry.insecure": "true" } : {}) },
          });
          // BuildKit pushed them itself; report what it says it pushed.
          if (output.push) {
            after.push(async ({ exporterResponse }) => {
              const digest = exporterResponse["containerimage.digest"];
              return names.map((name) => (digest ? { name, digest } : { name }));
            });
          }
        }
        break;
      }
      case "docker":
      case "oci": {
        const name: Record<string, string> = output.name ? { name: output.name } : {};
        if ("load" in output) {
          if (output.type !== "docker") invalid(`output type "oci" cannot be loaded into Docker; use type "docker"`);
          if (daemon.embeddedInDocker) {
            exporters.push({ type: "moby", attrs: name });
          } else {
            // Stream the docker-format archive straight into the Engine's load:
            // the one named, else the local Docker (as buildx's --load does).
            const engine = new DockerEngine(daemon.dockerEngine ?? localDockerSocket());
            const archive = new PassThrough();
            const loading = engine.load(archive, signal ? { signal } : {});
            // A refused load stops the export at once (its writes fail).
            loading.catch((err: Error) => {
              clientFailure ??= err;
              archive.destroy(err);
            });
            exporters.push({ type: "docker", attrs: name });
            targets.set(index, { kind: "archive", dest: archive });
            after.push(async () => {
              if (!archive.writableEnded) archive.destroy(new BuildKitNodeError("INTERNAL", "the daemon sent no image to load"));
              await loading;
              return [];
            });
            abandons.push(() => archive.destroy(new Error("build failed")));
          }
          break;
        }
        if (daemon.embeddedInDocker) {
          if (output.type === "oci") {
            throw new BuildKitNodeError("UNIMPLEMENTED", "dockerd's embedded BuildKit cannot export an OCI archive; use type \"docker\" or a standalone buildkitd");
          }
          // Store the image with moby, then save it through the Engine.
          const engine = ownEngine(`saving the image to ${typeof output.dest === "string" ? output.dest : "a stream"}`);
          exporters.push({ type: "moby", attrs: name });
          const dest = output.dest;
          after.push(async (context) => (await saveThroughEngine(engine, output.name, dest, context), []));
        } else {
          exporters.push({ type: output.type, attrs: name });
          targets.set(index, { kind: "archive", dest: output.dest });
        }
        break;
      }
      case "tar":
        exporters.push({ type: "tar", attrs: {} });
        targets.set(index, { kind: "archive", dest: output.dest });
        break;
      case "local":
        exporters.push({ type: "local", attrs: {} });
        targets.set(index, { kind: "directory", dest: output.dest });
        break;
      default:
        invalid(`unknown output type "${(output as { type: string }).type}"`);
    }
  }

  return {
    exporters,
    targets,
    async finish(context) {
      const pushed: { name: string; digest?: string }[] = [];
      for (const step of after) pushed.push(...(await step(context)));
      return { pushed };
    },
    abandon() {
      for (const abandon of abandons) abandon();
    },
    clientFailure: () => clientFailure,
  };
}

/**
 * BuildKit refuses to push a tagged name by digest: each name becomes its
 * repository, and `name-canonical` has the exporter report `repo@digest`.
 */
function pushByDigestAttrs(names: string[], insecure: boolean | undefined): Record<string, string> {
  const repositories = [...new Set(names.map(untagged))];
  return {
    name: repositories.join(","),
    push: "true",
    "push-by-digest": "true",
    "name-canonical": "true",
    ...(insecure ? { "registry.insecure": "true" } : {}),
  };
}

function pushedByDigest(names: string[], exporterResponse: Record<string, string>): { name: string; digest: string }[] {
  const digest = exporterResponse["containerimage.digest"];
  if (!digest) throw new BuildKitNodeError("INTERNAL", "the daemon pushed by digest but reported no digest");
  return [...new Set(names.map(untagged))].map((repository) => ({ name: `${repository}@${digest}`, digest }));
}

/** `host/repo:tag` or `host/repo@sha256:…` → `host/repo`. */
function untagged(name: string): string {
  const { domain, repository } = parseImageReference(name);
  return `${domain}/${repository}`;
}

function splitNames(names: string): string[] {
  const list = names.split(",").map((n) => n.trim()).filter(Boolean);
  if (list.length === 0) invalid("an image output needs a name");
  return list;
}

async function pushThroughEngine(engine: DockerEngine, names: string[], context: FinishContext): Promise<{ name: string; digest?: string }[]> {
  const pushed: { name: string; digest?: string }[] = [];
  for (const name of names) {
    const digest = `client:push:${name}`;
    const vertex = { digest, name: `pushing ${name}` };
    const startedAt = new Date();
    context.emit({ type: "vertex.started", ...vertex, startedAt, inputs: [] });
    try {
      const result = await engine.push(name, await context.credentials(parseImageReference(name).host), {
        signal: context.signal,
        onProgress: (p) =>
          context.emit({
            type: "progress",
            ...vertex,
            id: p.id ? `${p.status} ${p.id}` : p.status,
            // The Engine counts padded blocks: a small layer can show 512B of 60B.
            current: p.total > 0 ? Math.min(p.current, p.total) : p.current,
            total: p.total,
            completed: /^(Pushed|Layer already exists|Mounted from)/.test(p.status),
          }),
      });
      const completedAt = new Date();
      context.emit({ type: "vertex.completed", ...vertex, startedAt, completedAt, durationMs: completedAt.getTime() - startedAt.getTime() });
      pushed.push({ name, ...result });
    } catch (err) {
      context.emit({ type: "vertex.errored", ...vertex, error: err instanceof Error ? err.message : String(err), startedAt });
      throw err;
    }
  }
  return pushed;
}

async function saveThroughEngine(engine: DockerEngine, name: string | undefined, dest: string | Writable, context: FinishContext): Promise<void> {
  const image = name ?? context.exporterResponse["containerimage.config.digest"] ?? context.exporterResponse["containerimage.digest"];
  if (!image) throw new BuildKitNodeError("INTERNAL", "dockerd did not report the image it stored; cannot save it");
  const archive = await engine.save([image], { signal: context.signal });
  if (typeof dest !== "string") {
    await pipeline(archive, dest, { signal: context.signal });
    return;
  }
  await mkdir(dirname(dest), { recursive: true });
  const partial = `${dest}.partial-${process.pid}-${Date.now()}`;
  try {
    await pipeline(archive, createWriteStream(partial), { signal: context.signal });
    await rename(partial, dest);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}

function invalid(message: string): never {
  throw new BuildKitNodeError("INVALID_ARGUMENT", message);
}
