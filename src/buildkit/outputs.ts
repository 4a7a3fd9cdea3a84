import { PassThrough, type Writable } from "node:stream";
import { BuildKitNodeError } from "../errors.js";
import { parseImageReference } from "../registry/reference.js";
import type { OutputTarget } from "../session/filesend/targets.js";
import { streamToOutput } from "../session/stream-to-output.js";
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
 * around the solve (a Docker load fed during it; a push or save through the
 * Docker Engine after it, for dockerd).
 */
export interface ExportPlan {
  exporters: Exporter[];
  targets: Map<number, OutputTarget>;
  /** Starts what runs beside the solve (a Docker load reading the archive as it comes); call it just before the solve. */
  start(): void;
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

type Pushed = { name: string; digest?: string };

/** What one output adds to the plan. */
interface OutputPlan {
  exporter: Exporter;
  target?: OutputTarget;
  /** Started just before the solve. */
  start?(): void;
  /** Run after a successful solve, in output order. */
  after?(context: FinishContext): Promise<Pushed[]>;
  abandon?(): void;
  clientFailure?(): unknown;
}

/**
 * Plans `outputs` for the daemon: nothing is started here (see `start()`).
 * Refuses, before anything runs, what the daemon cannot do.
 */
export function planOutputs(outputs: Output[], target: PlanTarget): ExportPlan {
  const planned = outputs.map((output) => planOutput(output, target));
  const exporters = planned.map((p) => p.exporter);
  const targets = new Map<number, OutputTarget>();
  planned.forEach((p, index) => p.target && targets.set(index, p.target));
  return {
    exporters,
    targets,
    start() {
      for (const p of planned) p.start?.();
    },
    async finish(context) {
      const pushed: Pushed[] = [];
      for (const p of planned) if (p.after) pushed.push(...(await p.after(context)));
      return { pushed };
    },
    abandon() {
      for (const p of planned) p.abandon?.();
    },
    clientFailure: () => planned.map((p) => p.clientFailure?.()).find((failure) => failure !== undefined),
  };
}

function planOutput(output: Output, target: PlanTarget): OutputPlan {
  switch (output.type) {
    case "image":
      return planImage(output, target);
    case "docker":
    case "oci":
      if ("load" in output) return planLoad(output, target);
      return planArchive(output, target);
    case "tar":
      return { exporter: { type: "tar", attrs: {} }, target: { kind: "archive", dest: output.dest } };
    case "local":
      return { exporter: { type: "local", attrs: {} }, target: { kind: "directory", dest: output.dest } };
    default:
      return invalid(`unknown output type "${(output as { type: string }).type}"`);
  }
}

/** An image: the `image` exporter pushes it itself; dockerd's stores it (`moby`) and its Engine pushes. */
function planImage(output: Extract<Output, { type: "image" }>, { daemon, address }: PlanTarget): OutputPlan {
  const names = splitNames(output.name);
  if (output.pushByDigest) {
    if (!output.push) invalid("pushByDigest needs push: true");
    if (daemon.embeddedInDocker) {
      throw new BuildKitNodeError("UNIMPLEMENTED", "dockerd's embedded BuildKit cannot push by digest (its Engine API pushes tags); use a standalone buildkitd");
    }
    return { exporter: { type: "image", attrs: pushByDigestAttrs(names, output.insecure) }, after: async ({ exporterResponse }) => pushedByDigest(names, exporterResponse) };
  }
  if (daemon.embeddedInDocker) {
    const exporter = { type: "moby", attrs: { name: names.join(",") } };
    if (!output.push) return { exporter };
    const engine = ownEngine(daemon, address, `pushing ${names.join(", ")}`);
    return { exporter, after: (context) => pushThroughEngine(engine, names, context) };
  }
  const exporter = {
    type: "image",
    attrs: { name: names.join(","), push: String(Boolean(output.push)), ...(output.insecure ? { "registry.insecure": "true" } : {}) },
  };
  if (!output.push) return { exporter };
  // BuildKit pushed them itself; report what it says it pushed.
  return {
    exporter,
    after: async ({ exporterResponse }) => {
      const digest = exporterResponse["containerimage.digest"];
      return names.map((name) => (digest ? { name, digest } : { name }));
    },
  };
}

/** An image loaded into Docker: natively on dockerd; from a standalone BuildKit, its docker archive streamed into the Engine's load. */
function planLoad(output: Extract<Output, { load: true }>, { daemon, signal }: PlanTarget): OutputPlan {
  const name: Record<string, string> = output.name ? { name: output.name } : {};
  if (output.type !== "docker") invalid(`output type "oci" cannot be loaded into Docker; use type "docker"`);
  if (daemon.embeddedInDocker) return { exporter: { type: "moby", attrs: name } };
  // The one named, else the local Docker (as buildx's --load does).
  const engine = new DockerEngine(daemon.dockerEngine ?? localDockerSocket());
  const archive = new PassThrough();
  let loading: Promise<string[]> | undefined;
  let failure: unknown;
  return {
    exporter: { type: "docker", attrs: name },
    target: { kind: "archive", dest: archive },
    start() {
      loading = engine.load(archive, signal ? { signal } : {});
      // A refused load stops the export at once (its writes fail).
      loading.catch((err: Error) => {
        failure ??= err;
        archive.destroy(err);
      });
    },
    async after() {
      if (!archive.writableEnded) archive.destroy(new BuildKitNodeError("INTERNAL", "the daemon sent no image to load"));
      await loading;
      return [];
    },
    abandon: () => archive.destroy(new Error("build failed")),
    clientFailure: () => failure,
  };
}

/** A docker or OCI archive: streamed back by the exporter, or on dockerd stored with `moby` and saved through its Engine. */
function planArchive(output: Extract<Output, { dest: string | Writable; type: "docker" | "oci" }>, { daemon, address }: PlanTarget): OutputPlan {
  const name: Record<string, string> = output.name ? { name: output.name } : {};
  if (!daemon.embeddedInDocker) return { exporter: { type: output.type, attrs: name }, target: { kind: "archive", dest: output.dest } };
  if (output.type === "oci") {
    throw new BuildKitNodeError("UNIMPLEMENTED", "dockerd's embedded BuildKit cannot export an OCI archive; use type \"docker\" or a standalone buildkitd");
  }
  const engine = ownEngine(daemon, address, `saving the image to ${typeof output.dest === "string" ? output.dest : "a stream"}`);
  const dest = output.dest;
  return { exporter: { type: "moby", attrs: name }, after: async (context) => (await saveThroughEngine(engine, output.name, dest, context), []) };
}

/** The Engine of the dockerd whose BuildKit this is: named by the caller, or the step is refused before anything runs. */
function ownEngine(daemon: DaemonKind, address: string, step: string): DockerEngine {
  if (daemon.dockerEngine) return new DockerEngine(daemon.dockerEngine);
  throw new BuildKitNodeError(
    "INVALID_ARGUMENT",
    `${address} is a dockerd's BuildKit, which keeps images in that dockerd; ${step} goes through that dockerd's Engine API, ` +
      `and which dockerd it is cannot be known from here: connect with docker:// (or docker:///path/to/docker.sock), ` +
      `or pass connect("${address}", { dockerEngine: "unix:///path/to/docker.sock" }) naming its Engine socket`,
  );
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

async function pushThroughEngine(engine: DockerEngine, names: string[], context: FinishContext): Promise<Pushed[]> {
  const pushed: Pushed[] = [];
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
  await streamToOutput(archive, dest, context.signal);
}

function invalid(message: string): never {
  throw new BuildKitNodeError("INVALID_ARGUMENT", message);
}
