import { existsSync, statSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, relative, resolve } from "node:path";
import { text } from "node:stream/consumers";
import { type BuildEvent, BuildError, type BuildOptions, type BuildResult, type ContextInput, parseImageReference } from "../../index.js";
import { helpFlag, type ParsedArgs } from "../args.js";
import { type Builder, connectionFlags, dockerEngineFlag, openBuildKitBuilder } from "../builder.js";
import {
  parseAddHosts,
  parseCacheEntries,
  parseKeyValues,
  parseOutputs,
  parsePlatforms,
  parsePositive,
  parseProvenance,
  parseSecrets,
  parseSize,
  parseSsh,
  type Stdout,
} from "../build-flags.js";
import type { CliContext } from "../context.js";
import { depotFlags, openDepotBuilder } from "../depot.js";
import { EXIT, UsageError } from "../errors.js";
import { createRenderer, PROGRESS_MODES, type ProgressMode, type ProgressRenderer } from "../../progress/index.js";
import type { Command } from "./command.js";

export const buildCommand: Command = {
  name: "build",
  usage: "buildkit-node build [FLAGS] [CONTEXT]",
  summary: "Build an image from a Dockerfile",
  description:
    'Builds CONTEXT (a directory, default "."; "-" reads a tar archive, plain or gzip, from stdin) with BuildKit\'s Dockerfile frontend. ' +
    "Flags follow docker buildx build. Progress goes to stderr.",
  maxPositionals: 1,
  flags: {
    file: { type: "string", short: "f", value: "PATH", description: 'Dockerfile (default "CONTEXT/Dockerfile"; "-" reads it from stdin)' },
    target: { type: "string", value: "STAGE", description: "Build this stage" },
    "build-arg": { type: "string", multiple: true, value: "KEY[=VALUE]", description: "Build argument; KEY alone takes the value of $KEY" },
    label: { type: "string", multiple: true, value: "KEY=VALUE", description: "Image label" },
    platform: { type: "string", multiple: true, value: "PLATFORMS", description: "Target platforms, comma-separated (e.g. linux/amd64,linux/arm64)" },
    "no-cache": { type: "boolean", description: "Do not use the cache" },
    pull: { type: "boolean", description: "Always resolve base images from their registry" },
    tag: { type: "string", short: "t", multiple: true, value: "NAME", description: "Image name, e.g. registry.example.com/app:1" },
    push: { type: "boolean", description: "Push the image (to the -t/--tag names)" },
    load: { type: "boolean", description: "Load the image into Docker (named after the first tag)" },
    output: {
      type: "string",
      short: "o",
      multiple: true,
      value: "SPEC",
      description:
        'Output (buildx syntax): type=local,dest=DIR; type=tar|docker|oci,dest=FILE ("-": stdout); type=docker (load); type=image,name=NAME[,push=true]; DIR alone is type=local; "-" alone is a tar on stdout',
    },
    "cache-from": { type: "string", multiple: true, value: "SPEC", description: "Cache source, e.g. type=registry,ref=IMAGE (or just IMAGE)" },
    "cache-to": { type: "string", multiple: true, value: "SPEC", description: "Cache destination, e.g. type=registry,ref=IMAGE,mode=max or type=inline" },
    provenance: { type: "string", value: "SPEC", description: "Provenance attestation pushed with the image: true, false, mode=min or mode=max (standalone BuildKit v0.11+)" },
    secret: { type: "string", multiple: true, value: "SPEC", description: "Secret for RUN --mount=type=secret: id=ID[,src=PATH|,env=VAR]" },
    ssh: { type: "string", multiple: true, value: "SPEC", description: "SSH agent for RUN --mount=type=ssh: default or ID[=SOCKET|KEY[,KEY…]]" },
    "add-host": { type: "string", multiple: true, value: "HOST:IP", description: "Extra /etc/hosts entry for RUN steps" },
    network: { type: "string", value: "MODE", description: "Network of RUN steps: default, none or host" },
    progress: { type: "string", value: "MODE", description: `Progress output: ${PROGRESS_MODES.join(", ")} (default: $BUILDKIT_PROGRESS or auto)` },
    quiet: { type: "boolean", short: "q", description: "No progress; print the image digest on stdout" },
    "metadata-file": { type: "string", value: "PATH", description: "Write the build's result (exporter response, image digest) as JSON" },
    "max-context-size": { type: "string", value: "SIZE", description: 'With CONTEXT "-": refuse a tar archive larger than this once decompressed (default 8GiB)' },
    "max-compression-ratio": { type: "string", value: "N", description: 'With CONTEXT "-": refuse a gzip archive that expands more than N times (default 100, checked past 64MiB)' },
    "max-context-entries": { type: "string", value: "N", description: 'With CONTEXT "-": refuse a tar archive with more entries (default 1000000)' },
    ...connectionFlags,
    ...dockerEngineFlag,
    depot: {
      type: "string",
      value: "PROJECT_ID",
      description: "Build on Depot machines, in this project (token: $DEPOT_TOKEN or --token); with $DEPOT_BUILD_ID set, into that build (its token in $DEPOT_TOKEN)",
    },
    save: { type: "boolean", description: "With --depot: also save the image in Depot's registry (get it back with pull/push and the build ID)" },
    "save-tag": { type: "string", multiple: true, value: "TAG", description: "With --save: another tag for the saved image" },
    ...depotFlags,
    help: helpFlag,
  },
  footer: [
    "Examples:",
    "  buildkit-node build -t registry.example.com/app:1 --push .",
    "  buildkit-node build --build-arg VERSION=1.2 -o type=local,dest=out .",
    "  tar -C app -c . | buildkit-node build -o - - > image.tar",
    "",
    "Exit codes: 0 built, 1 the build failed, 2 bad usage, 130 interrupted (143 on SIGTERM).",
  ].join("\n"),
  run: runBuild,
};

/** What the flags ask for, checked before anything connects. */
interface BuildPlan {
  options: BuildOptions;
  progress: ProgressMode;
  quiet: boolean;
  metadataFile: string | undefined;
}

async function runBuild(args: ParsedArgs, ctx: CliContext): Promise<number> {
  const plan = await planBuild(args, ctx);
  const builder = await openBuilder(args, ctx);
  let renderer: ProgressRenderer | undefined;
  try {
    renderer = createRenderer(plan.progress, ctx.stderr, { env: ctx.env });
    const run = builder.run({ ...plan.options, signal: ctx.signal });
    const shown = showEvents(run.events, renderer);
    let result: BuildResult;
    try {
      result = await run;
    } catch (error) {
      await shown;
      renderer.done({ error });
      if (error instanceof BuildError) {
        ctx.stderr.write(formatBuildError(error, plan.progress === "rawjson"));
        return EXIT.failure;
      }
      throw error;
    }
    await shown;
    renderer.done();
    if (plan.metadataFile) await writeMetadata(plan.metadataFile, result);
    if (plan.quiet) ctx.stdout.write(`${result.digest ?? result.exporterResponse["containerimage.digest"] ?? result.ref}\n`);
    return EXIT.ok;
  } finally {
    await builder.close();
  }
}

/**
 * The builder the flags name. `--depot` goes to `openDepotBuilder`; the rest
 * of the command does not care which it is.
 */
async function openBuilder(args: ParsedArgs, ctx: CliContext): Promise<Builder> {
  const projectId = args.string("depot");
  if (projectId === undefined) {
    for (const flag of ["save", "save-tag"]) {
      if (args.has(flag)) throw new UsageError(`--${flag} saves in Depot's registry: it needs --depot`, "build");
    }
    return openBuildKitBuilder(args, ctx);
  }
  if (args.has("save-tag") && !args.boolean("save")) throw new UsageError("--save-tag needs --save", "build");
  if (projectId === "") throw new UsageError("--depot needs a project ID", "build");
  for (const flag of ["builder", "tlscacert", "tlscert", "tlskey", "tlsservername"]) {
    if (args.has(flag)) throw new UsageError(`--depot and --${flag} cannot be used together`, "build");
  }
  return openDepotBuilder(projectId, args, ctx);
}

async function showEvents(events: AsyncIterable<BuildEvent>, renderer: ProgressRenderer): Promise<void> {
  for await (const event of events) {
    try {
      renderer.event(event);
    } catch {
      // A display problem must not stop the build or hide its result.
    }
  }
}

async function planBuild(args: ParsedArgs, ctx: CliContext): Promise<BuildPlan> {
  const usage = (message: string) => new UsageError(message, "build");
  const tarLimits = parseTarLimits(args, (args.positionals[0] ?? ".") === "-");
  const options: BuildOptions = { ...(await contextOptions(args, ctx)), ...(tarLimits ? { tarLimits } : {}) };

  const target = args.string("target");
  if (target !== undefined) {
    if (target === "") throw usage("--target needs a stage name");
    options.target = target;
  }
  const buildArgs = parseKeyValues("build-arg", args.strings("build-arg"), ctx.env);
  if (Object.keys(buildArgs).length > 0) options.buildArgs = buildArgs;
  const labels = parseKeyValues("label", args.strings("label"), undefined);
  if (Object.keys(labels).length > 0) options.labels = labels;
  const platforms = parsePlatforms(args.strings("platform"));
  if (platforms.length > 0) options.platforms = platforms;
  if (args.boolean("no-cache")) options.noCache = true;
  if (args.boolean("pull")) options.pull = true;

  const tags = args.strings("tag");
  for (const tag of tags) {
    // Read as Docker reads names (commas separate names in an output's name=, so none here).
    if (tag.includes(",")) throw usage(`-t/--tag "${tag}" is not an image name`);
    try {
      parseImageReference(tag);
    } catch (err) {
      throw usage(`-t/--tag: ${(err as Error).message}`);
    }
  }
  const stdout: Stdout = { stream: ctx.stdout };
  const outputs = parseOutputs({ outputs: args.strings("output"), tags, push: args.boolean("push"), load: args.boolean("load") }, ctx.cwd, stdout);
  if (outputs.length > 0) options.outputs = outputs;

  const cacheFrom = parseCacheEntries("cache-from", args.strings("cache-from"));
  if (cacheFrom.length > 0) options.cacheFrom = cacheFrom;
  const cacheTo = parseCacheEntries("cache-to", args.strings("cache-to"));
  if (cacheTo.length > 0) options.cacheTo = cacheTo;
  const provenance = parseProvenance(args.string("provenance"));
  if (provenance) options.provenance = provenance;
  const secrets = parseSecrets(args.strings("secret"), ctx.env, ctx.cwd);
  if (Object.keys(secrets).length > 0) options.secrets = secrets;
  const ssh = parseSsh(args.strings("ssh"), ctx.cwd);
  if (ssh.length > 0) options.ssh = ssh;
  const hosts = parseAddHosts(args.strings("add-host"));
  if (Object.keys(hosts).length > 0) options.addHosts = hosts;
  const network = args.string("network");
  if (network !== undefined) {
    if (network !== "default" && network !== "none" && network !== "host") throw usage(`--network must be default, none or host, not "${network}"`);
    options.network = network;
  }

  const quiet = args.boolean("quiet");
  const progress = quiet ? "quiet" : progressMode(args.string("progress"), ctx.env);
  if (quiet && stdout.claimed) throw usage("-q/--quiet prints the digest on stdout, which an output already writes to");
  const metadataFile = args.string("metadata-file");
  if (metadataFile === "") throw usage("--metadata-file needs a path");
  return { options, progress, quiet, metadataFile: metadataFile && resolve(ctx.cwd, metadataFile) };
}

/** CONTEXT (a directory, or "-": a tar archive on stdin) and -f/--file (a path, or "-": the Dockerfile on stdin). */
async function contextOptions(args: ParsedArgs, ctx: CliContext): Promise<Pick<BuildOptions, "context" | "dockerfile" | "dockerfileContent">> {
  const usage = (message: string) => new UsageError(message, "build");
  const contextArg = args.positionals[0] ?? ".";
  const fileArg = args.string("file");
  if (contextArg === "-" && fileArg === "-") throw usage('CONTEXT and -f/--file cannot both be "-" (stdin)');

  if (contextArg === "-") {
    if (ctx.stdin.isTTY) throw usage('CONTEXT "-" reads a tar archive from stdin, but stdin is a terminal');
    const context: ContextInput = { tar: ctx.stdin };
    return fileArg === undefined ? { context } : { context, dockerfile: fileArg }; // a path inside the tar archive
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(contextArg) || contextArg.startsWith("git@")) {
    throw usage(`CONTEXT "${contextArg}": remote contexts are not supported; give a directory or "-" for a tar archive on stdin`);
  }
  const contextDir = resolve(ctx.cwd, contextArg);
  if (!existsSync(contextDir) || !statSync(contextDir).isDirectory()) throw usage(`CONTEXT "${contextArg}" is not a directory`);
  if (fileArg === "-") {
    if (ctx.stdin.isTTY) throw usage('-f/--file "-" reads the Dockerfile from stdin, but stdin is a terminal');
    return { context: contextDir, dockerfileContent: await text(ctx.stdin) };
  }
  // buildx reads -f relative to the current directory, the library relative to the context.
  const path = fileArg === undefined ? resolve(contextDir, "Dockerfile") : resolve(ctx.cwd, fileArg);
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw usage(fileArg === undefined ? `no Dockerfile in CONTEXT "${contextArg}"; give one with -f/--file` : `-f/--file: no file at ${fileArg}`);
  }
  return { context: contextDir, dockerfile: relative(contextDir, path) };
}

/** `--max-context-size`, `--max-compression-ratio`, `--max-context-entries`: for a tar context on stdin only. */
function parseTarLimits(args: ParsedArgs, tarContext: boolean): BuildOptions["tarLimits"] {
  const given = ["max-context-size", "max-compression-ratio", "max-context-entries"].filter((flag) => args.has(flag));
  if (given.length === 0) return undefined;
  if (!tarContext) throw new UsageError(`--${given[0]} applies to a tar archive on stdin (CONTEXT "-"), not to a directory`, "build");
  const size = args.string("max-context-size");
  const ratio = args.string("max-compression-ratio");
  const entries = args.string("max-context-entries");
  return {
    ...(size !== undefined ? { maxBytes: parseSize("max-context-size", size) } : {}),
    ...(ratio !== undefined ? { maxCompressionRatio: parsePositive("max-compression-ratio", ratio) } : {}),
    ...(entries !== undefined ? { maxEntries: parsePositive("max-context-entries", entries) } : {}),
  };
}

/** `--progress`, else BUILDKIT_PROGRESS, else auto (BUILDKIT_PROGRESS also overrides an explicit auto, as in buildx). */
function progressMode(flag: string | undefined, env: NodeJS.ProcessEnv): ProgressMode {
  const isMode = (v: string): v is ProgressMode => (PROGRESS_MODES as readonly string[]).includes(v);
  if (flag !== undefined && !isMode(flag)) throw new UsageError(`--progress "${flag}": use one of ${PROGRESS_MODES.join(", ")}`, "build");
  if (flag !== undefined && flag !== "auto") return flag;
  const fromEnv = env.BUILDKIT_PROGRESS;
  if (fromEnv) {
    if (!isMode(fromEnv)) throw new UsageError(`BUILDKIT_PROGRESS="${fromEnv}": use one of ${PROGRESS_MODES.join(", ")}`, "build");
    return fromEnv;
  }
  return "auto";
}

/**
 * buildx's metadata file: the exporter response (values that are base64 of
 * JSON decoded, as buildx does), with `containerimage.digest` the digest the
 * registry holds when the image was pushed, and the build's reference.
 */
export function metadataOf(result: BuildResult): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(result.exporterResponse)) metadata[key] = decodeValue(value);
  if (result.digest) metadata["containerimage.digest"] = result.digest;
  if (result.pushed.length > 0 && metadata["image.name"] === undefined) metadata["image.name"] = result.pushed.map((p) => p.name).join(",");
  metadata["buildkit-node.build.ref"] = result.ref;
  // As the depot CLI writes it: what `pull`/`push` need later.
  const depot = result as BuildResult & { buildId?: string; projectId?: string; saved?: { reference: string } };
  if (depot.buildId) {
    metadata["depot.build"] = { buildID: depot.buildId, ...(depot.projectId ? { projectID: depot.projectId } : {}), ...(depot.saved ? { saved: depot.saved.reference } : {}) };
  }
  return metadata;
}

async function writeMetadata(path: string, result: BuildResult): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(metadataOf(result), null, 2)}\n`);
}

function decodeValue(value: string): unknown {
  if (value.length < 8 || !/^[A-Za-z0-9+/]+={0,2}$/.test(value) || value.length % 4 !== 0) return value;
  try {
    const decoded: unknown = JSON.parse(Buffer.from(value, "base64").toString("utf8"));
    return typeof decoded === "object" && decoded !== null ? decoded : value;
  } catch {
    return value;
  }
}

/**
 * A failed build as buildx reports it: the failing step and its last lines,
 * the Dockerfile lines around the error when known, then the error itself.
 */
function formatBuildError(error: BuildError, brief: boolean): string {
  // The message starts with the Dockerfile excerpt when there is one; the error follows it.
  const excerpt = error.source?.excerpt;
  const rest = excerpt && error.message.startsWith(`${excerpt}\n`) ? error.message.slice(excerpt.length + 1) : error.message;
  const summary = `ERROR: ${rest.split("\n")[0]}\n`;
  if (brief) return summary;
  const lines: string[] = [];
  if (error.step) {
    lines.push("------", ` > ${error.step.name}:`);
    for (const line of error.logTail.slice(-10)) lines.push(`   ${line}`);
    lines.push("------");
  }
  if (excerpt) lines.push(excerpt);
  else if (error.source) lines.push(`${error.source.file}:${error.source.line}`);
  return `${lines.map((l) => `${l}\n`).join("")}${summary}`;
}
