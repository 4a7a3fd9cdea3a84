import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type BuildEvent, type BuildKitClient, type BuildOptions, type BuildResult, connect, type TlsOptions } from "../index.js";
import type { FlagSpecs, ParsedArgs } from "./args.js";
import type { CliContext } from "./context.js";
import { UsageError } from "./errors.js";

/** A build in progress, as `BuildRun` is: awaitable, with its events. */
export interface BuildRunLike extends PromiseLike<BuildResult> {
  readonly events: AsyncIterable<BuildEvent>;
}

/**
 * What `build` runs on: a BuildKit daemon, or Depot (`--depot`). The command
 * needs nothing else from it.
 */
export interface Builder {
  /** Names the builder in messages, e.g. `docker://` or `depot project abc123`. */
  readonly name: string;
  run(options: BuildOptions): BuildRunLike;
  close(): Promise<void>;
}

/** Flags that choose and reach a BuildKit daemon. */
export const connectionFlags: FlagSpecs = {
  builder: {
    type: "string",
    value: "ADDRESS",
    description: "BuildKit address: unix:///PATH, tcp://HOST:PORT, docker://[/PATH] (default: $BUILDKIT_HOST, then buildkitd's socket, then dockerd's)",
  },
  tlscacert: { type: "string", value: "PATH", description: "TLS: CA certificate (PEM) the builder's certificate must chain to" },
  tlscert: { type: "string", value: "PATH", description: "TLS: client certificate (PEM)" },
  tlskey: { type: "string", value: "PATH", description: "TLS: client private key (PEM)" },
  tlsservername: { type: "string", value: "NAME", description: "TLS: the name the builder's certificate must carry" },
};

/** For the commands that push, save or load images: which Docker Engine goes with the builder. */
export const dockerEngineFlag: FlagSpecs = {
  "docker-engine": {
    type: "string",
    value: "SOCKET",
    description:
      "Docker Engine socket (unix:///PATH) for images: that of the dockerd whose BuildKit --builder reaches through a front (pushes and saves go through it); for a standalone buildkitd, where --load loads",
  },
};

/** Connects to the BuildKit the flags (or the environment) name. */
export async function connectFromFlags(args: ParsedArgs, ctx: CliContext): Promise<BuildKitClient> {
  const address = args.string("builder");
  if (address === "") throw new UsageError("--builder needs an address, e.g. tcp://10.0.0.5:1234 or docker://", args.command);
  const tls = tlsFromFlags(args, ctx.cwd);
  const dockerEngine = dockerEngineFromFlags(args);
  return connect(address, { ...(tls ? { tls } : {}), ...(dockerEngine ? { dockerEngine } : {}), signal: ctx.signal });
}

/** `--docker-engine`, when the command has it. */
export function dockerEngineFromFlags(args: ParsedArgs): string | undefined {
  const socket = args.string("docker-engine");
  if (socket === "") throw new UsageError("--docker-engine needs a socket, e.g. unix:///var/run/docker.sock", args.command);
  return socket;
}

/** A builder on the BuildKit daemon the flags name. */
export async function openBuildKitBuilder(args: ParsedArgs, ctx: CliContext): Promise<Builder> {
  const client = await connectFromFlags(args, ctx);
  return {
    name: client.address,
    run: (options) => client.build(options),
    close: () => client.close(),
  };
}

/** TLS material from `--tls*` file paths; the files' contents never reach a message. */
function tlsFromFlags(args: ParsedArgs, cwd: string): TlsOptions | undefined {
  const files = { ca: args.string("tlscacert"), cert: args.string("tlscert"), key: args.string("tlskey") };
  return tlsFromFiles(files, args.string("tlsservername"), cwd, args.command);
}

/**
 * TLS material from PEM file paths (as the `--tls*` flags name them, for
 * `command`'s messages); the files' contents never reach a message.
 */
export function tlsFromFiles(
  files: { ca?: string | undefined; cert?: string | undefined; key?: string | undefined },
  serverName: string | undefined,
  cwd: string,
  command: string,
): TlsOptions | undefined {
  const read = (flag: string, path: string | undefined): string | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(resolve(cwd, path), "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new UsageError(`--${flag}: cannot read ${path} (${code})`, command);
    }
  };
  const ca = read("tlscacert", files.ca);
  const cert = read("tlscert", files.cert);
  const key = read("tlskey", files.key);
  if ((cert === undefined) !== (key === undefined)) throw new UsageError("--tlscert and --tlskey go together", command);
  if (ca === undefined && cert === undefined && serverName === undefined) return undefined;
  return { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}), ...(serverName ? { serverName } : {}) };
}
