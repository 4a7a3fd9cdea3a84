// `pull` and `push`: a build saved in Depot's registry (`build --depot --save`)
// into Docker or an archive, or on to another registry. Flags follow the
// depot CLI's (`--tag`, `--platform`, `--token`, `--progress`).
import type { CopyProgress, RegistryAuth } from "../../index.js";
import { helpFlag, type ParsedArgs } from "../args.js";
import { dockerEngineFromFlags } from "../builder.js";
import type { CliContext } from "../context.js";
import { depotClient, depotFlags } from "../depot.js";
import { EXIT, UsageError } from "../errors.js";
import type { Command } from "./command.js";

const progressFlag = {
  progress: { type: "string", value: "MODE", description: 'Progress on stderr: "plain" (a line per blob, the default) or "quiet"' },
} as const;

export const pullCommand: Command = {
  name: "pull",
  usage: "buildkit-node pull [FLAGS] BUILD_ID",
  summary: "Get a build saved in Depot's registry (into Docker, or an archive)",
  description:
    "Loads the image a Depot build saved (build --depot --save) into a Docker Engine (--docker-engine, else $DOCKER_HOST or /var/run/docker.sock), " +
    "streamed from Depot's registry; with --output, writes it as an archive instead.",
  maxPositionals: 1,
  flags: {
    tag: { type: "string", short: "t", multiple: true, value: "NAME", description: "Name the image gets, e.g. app:dev (default: its name in Depot's registry)" },
    platform: { type: "string", value: "PLATFORM", description: "The platform to take from a multi-platform image (default: this machine's)" },
    output: { type: "string", short: "o", value: "FILE", description: "Write an archive to FILE instead of loading into Docker" },
    format: { type: "string", value: "FORMAT", description: 'With --output: "docker" (docker load, the default) or "oci" (an OCI layout)' },
    "docker-engine": { type: "string", value: "SOCKET", description: "The Docker Engine to load into, unix:///PATH (default: $DOCKER_HOST, else /var/run/docker.sock)" },
    ...progressFlag,
    ...depotFlags,
    help: helpFlag,
  },
  footer: ["Examples:", "  buildkit-node pull --tag app:dev BUILD_ID", "  buildkit-node pull --output app.tar --format oci BUILD_ID"].join("\n"),
  async run(args, ctx) {
    const buildId = requiredBuildId(args);
    const format = args.string("format");
    if (format !== undefined && format !== "docker" && format !== "oci") throw new UsageError(`--format must be "docker" or "oci", not ${JSON.stringify(format)}`, args.command);
    const output = args.string("output");
    if (format !== undefined && output === undefined) throw new UsageError("--format needs --output", args.command);
    const platform = args.string("platform");
    const tags = args.strings("tag");
    const dockerEngine = dockerEngineFromFlags(args);
    if (dockerEngine !== undefined && output !== undefined) throw new UsageError("--docker-engine and --output cannot be used together", args.command);
    const result = await depotClient(args, ctx).pull(buildId, {
      ...(output !== undefined ? { dest: output, format: format ?? "docker" } : {}),
      ...(dockerEngine !== undefined ? { dockerEngine } : {}),
      ...(platform ? { platform } : {}),
      ...(tags.length > 0 ? { tags } : {}),
      ...progressOption(args, ctx),
      signal: ctx.signal,
    });
    ctx.stderr.write(output !== undefined ? `wrote ${result.reference} to ${output}\n` : `loaded ${(result.loaded ?? []).join(", ")}\n`);
    return EXIT.ok;
  },
};

export const pushCommand: Command = {
  name: "push",
  usage: "buildkit-node push [FLAGS] --tag NAME BUILD_ID",
  summary: "Copy a build saved in Depot's registry to another registry",
  description:
    "Copies the image a Depot build saved (build --depot --save) to a registry under each --tag, registry to registry (blobs the registry has are not sent again). " +
    "Credentials: docker's config.json, or $DEPOT_PUSH_REGISTRY_USERNAME and $DEPOT_PUSH_REGISTRY_PASSWORD.",
  maxPositionals: 1,
  flags: {
    tag: { type: "string", short: "t", multiple: true, value: "NAME", description: "Where to push, e.g. ghcr.io/acme/app:1 (required)" },
    ...progressFlag,
    ...depotFlags,
    help: helpFlag,
  },
  footer: ["Example:", "  buildkit-node push --tag ghcr.io/acme/app:1 BUILD_ID"].join("\n"),
  async run(args, ctx) {
    const buildId = requiredBuildId(args);
    const tags = args.strings("tag");
    if (tags.length === 0) throw new UsageError("--tag is required: where to push", args.command);
    const result = await depotClient(args, ctx).push(buildId, { tag: tags, registryAuth: pushCredentials(ctx), ...progressOption(args, ctx), signal: ctx.signal });
    for (const { name, digest } of result.pushed) ctx.stdout.write(`${name}@${digest}\n`);
    return EXIT.ok;
  },
};

function requiredBuildId(args: ParsedArgs): string {
  const buildId = args.positionals[0];
  if (!buildId) throw new UsageError("a BUILD_ID is required", args.command);
  return buildId;
}

/** As the depot CLI: these two name the destination's credentials; else docker's config. */
function pushCredentials(ctx: CliContext): RegistryAuth {
  const username = ctx.env.DEPOT_PUSH_REGISTRY_USERNAME;
  const password = ctx.env.DEPOT_PUSH_REGISTRY_PASSWORD;
  if (!username && !password) return "docker-config";
  return () => ({ ...(username ? { username } : {}), ...(password ? { password } : {}) });
}

/** One line per blob (or manifest) once it has moved, unless quiet. */
function progressOption(args: ParsedArgs, ctx: CliContext): { onProgress?: (event: CopyProgress) => void } {
  const mode = args.string("progress") ?? "plain";
  if (mode !== "plain" && mode !== "quiet" && mode !== "auto" && mode !== "tty") {
    throw new UsageError(`--progress must be plain or quiet, not ${JSON.stringify(mode)}`, args.command);
  }
  if (mode === "quiet") return {};
  return {
    onProgress: (event) => {
      if (event.status === "copying") return;
      ctx.stderr.write(`${event.kind} ${event.digest.slice(0, 19)} ${event.status} (${event.size} bytes)\n`);
    },
  };
}
