// `buildkit-node local-depot`: a local Depot for running Depot's own clients
// (the `depot` CLI, @depot/sdk-node, this library) offline, e.g. in CI. It
// prints the environment those clients read, then serves until SIGINT or
// SIGTERM.
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { rootCertificates } from "node:tls";
import { DEFAULT_SAVED_IMAGE_REGISTRY, startLocalDepot } from "../../testing/local-depot.js";
import { helpFlag, type ParsedArgs } from "../args.js";
import { connectionFlags, tlsFromFiles } from "../builder.js";
import type { CliContext } from "../context.js";
import { EXIT, UsageError } from "../errors.js";
import type { Command } from "./command.js";

// The --tls* flags as `build` names them (without --buildkit: BUILDKIT_TLS_* with BUILDKIT_HOST).
const { builder: _builder, ...tlsFlags } = connectionFlags;

export const localDepotCommand: Command = {
  name: "local-depot",
  usage: "buildkit-node local-depot [FLAGS]",
  summary: "Run a local Depot API in front of a BuildKit",
  description: [
    "Starts a local stand-in for Depot's API (what the depot CLI, @depot/sdk-node and",
    "buildkit-node call) whose machines are mutual-TLS fronts for one BuildKit, and whose",
    "saved images (depot build --save, depot pull, depot push) go to a registry. Prints the",
    "environment for Depot's clients as shell lines to eval, then serves until SIGINT or SIGTERM.",
  ].join("\n"),
  maxPositionals: 0,
  flags: {
    buildkit: {
      type: "string",
      value: "ADDRESS",
      description: "The BuildKit behind the machines: unix:///PATH, tcp://HOST:PORT, docker://[/PATH] (default: $BUILDKIT_HOST, then docker://)",
    },
    ...tlsFlags,
    port: { type: "string", value: "PORT", description: "Serve the API on this port of 127.0.0.1 (default: any free port)" },
    registry: {
      type: "string",
      value: "HOST:PORT",
      description: `Registry (plain HTTP) for saved images (default: ${DEFAULT_SAVED_IMAGE_REGISTRY}); "none" for no saved-image registry`,
    },
    "depot-registry-port": {
      type: "string",
      value: "PORT",
      description:
        "Also serve the saved-image registry as registry.depot.dev on this port of 127.0.0.1 (80: where depot build --save pushes a build handed over with DEPOT_BUILD_ID; see below)",
    },
    project: { type: "string", value: "NAME", description: "Create a project of this name and print DEPOT_PROJECT_ID" },
    token: { type: "string", value: "TOKEN", description: "The organization token clients use (default: a new random one)" },
    compression: { type: "string", value: "gzip|identity", description: "Ask clients to compress their traffic with the machines" },
    "export-file": { type: "string", value: "PATH", description: "Also write the export lines to PATH once the server is ready" },
    help: helpFlag,
  },
  footer: [
    "Example (CI):",
    "  buildkit-node local-depot --buildkit tcp://127.0.0.1:1234 --tlscacert ca.pem --tlscert cert.pem \\",
    "    --tlskey key.pem --tlsservername buildkitd --project ci --export-file /tmp/depot.env &",
    "  while [ ! -s /tmp/depot.env ]; do sleep 0.2; done; . /tmp/depot.env",
    "  depot build --push -t 127.0.0.1:5000/app:1 .",
    "",
    "HTTPS_PROXY and SSL_CERT_FILE are for `depot push`, which reaches Depot's blob host over HTTPS.",
    "",
    "Handed a build it did not create (DEPOT_BUILD_ID), `depot build --save` names the image",
    "registry.depot.dev/<project>:<build id> whatever the server. --depot-registry-port 80 takes",
    "those saves when registry.depot.dev is 127.0.0.1 in /etc/hosts and the BuildKit's config",
    'has [registry."registry.depot.dev"] http = true. Each saved image is reported on stderr.',
  ].join("\n"),

  async run(args: ParsedArgs, ctx: CliContext): Promise<number> {
    const buildkit = args.string("buildkit") ?? (ctx.env.BUILDKIT_HOST || "docker://");
    const tls = tlsOf(args, ctx);
    const port = portOf(args, "port");
    const depotRegistryPort = portOf(args, "depot-registry-port");
    const registry = args.string("registry");
    if (depotRegistryPort !== undefined && registry === "none") {
      throw new UsageError("--depot-registry-port needs a saved-image registry (not --registry none)", args.command);
    }
    const compression = args.string("compression");
    if (compression !== undefined && compression !== "gzip" && compression !== "identity") {
      throw new UsageError(`--compression is gzip or identity, got ${JSON.stringify(compression)}`, args.command);
    }
    const token = args.string("token");
    if (token !== undefined && !/^\S+$/.test(token)) throw new UsageError("--token must be one word", args.command);

    const depot = await startLocalDepot({
      buildkit,
      ...(tls ? { buildkitTls: tls } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(token ? { token } : {}),
      ...(registry !== undefined ? { savedImageRegistry: registry === "none" ? false : registry } : {}),
      ...(compression ? { machineCompression: compression } : {}),
      ...(depotRegistryPort !== undefined ? { depotRegistryPort } : {}),
      onImageSaved: (image, build) => ctx.stderr.write(`saved ${image.reference} ${image.digest} (build ${build.id})\n`),
    });
    const scratch = await mkdtemp(join(tmpdir(), "buildkit-node-local-depot-"));
    try {
      const name = args.string("project");
      const project = name !== undefined ? depot.addProject({ name }) : undefined;
      // The CLI's Go runtime replaces its trust store with SSL_CERT_FILE: keep the usual roots in it.
      const caFile = join(scratch, "ca-bundle.pem");
      await writeFile(caFile, [depot.caCertificate, ...rootCertificates].join("\n"), { mode: 0o644 });
      const lines = [
        `export DEPOT_API_URL=${depot.apiUrl}`,
        `export DEPOT_TOKEN=${depot.token}`,
        // What `depot login` would store: `depot org list` reads it.
        `export DEPOT_API_TOKEN=${depot.token}`,
        ...(project ? [`export DEPOT_PROJECT_ID=${project.projectId}`] : []),
        `export HTTPS_PROXY=${depot.httpsProxy}`,
        `export SSL_CERT_FILE=${caFile}`,
      ].join("\n");
      ctx.stdout.write(`${lines}\n`);
      const envFile = args.string("export-file");
      if (envFile) await writeAtomically(resolve(ctx.cwd, envFile), `${lines}\n`);
      ctx.stderr.write(
        `local Depot at ${depot.apiUrl}, machines on ${buildkit}` +
          (depot.savedImageRegistry ? `, saved images at ${depot.savedImageRegistry} (${registry ?? DEFAULT_SAVED_IMAGE_REGISTRY})` : "") +
          (depot.depotRegistry ? `, also as ${depot.depotRegistry}` : "") +
          `; stop it with Ctrl-C\n`,
      );
      await untilAborted(ctx.signal);
      ctx.stderr.write("local Depot stopping\n");
      return EXIT.ok;
    } finally {
      await depot.stop();
      await rm(scratch, { recursive: true, force: true });
    }
  },
};

/** The --tls* flags; without --buildkit, BUILDKIT_TLS_* go with BUILDKIT_HOST, as buildctl reads them. */
function tlsOf(args: ParsedArgs, ctx: CliContext) {
  const env = !args.has("buildkit") && ctx.env.BUILDKIT_HOST ? ctx.env : {};
  const pick = (flag: string, variable: string) => args.string(flag) ?? (env[variable] || undefined);
  return tlsFromFiles(
    { ca: pick("tlscacert", "BUILDKIT_TLS_CA"), cert: pick("tlscert", "BUILDKIT_TLS_CERT"), key: pick("tlskey", "BUILDKIT_TLS_KEY") },
    pick("tlsservername", "BUILDKIT_TLS_SERVER_NAME"),
    ctx.cwd,
    args.command,
  );
}

function portOf(args: ParsedArgs, flag: "port" | "depot-registry-port"): number | undefined {
  const text = args.string(flag);
  if (text === undefined) return undefined;
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65_535) throw new UsageError(`--${flag} must be a port number, got ${JSON.stringify(text)}`, args.command);
  return port;
}

/** Readers polling for the file never see it half-written. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const partial = `${path}.${process.pid}.partial`;
  await writeFile(partial, text, { mode: 0o600 });
  await rename(partial, path);
}

function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
