// What kind of BuildKit a client talks to, and which Docker Engine goes with
// it. Asked once per client, when a build first needs to know.
import { BuildKitNodeError } from "../errors.js";
import { DEFAULT_DOCKER_SOCKET, type Endpoint } from "../transport/address.js";
import type { BuildOptions } from "./build-options.js";
import type { BuildKitInfo, Worker } from "./client.js";
import { cacheEntries } from "./solve-request.js";

export interface DaemonKind {
  /**
   * dockerd's embedded BuildKit: it exports only to dockerd's own image
   * store (`moby`), `tar` and `local`; pushes and saves of its images go
   * through that dockerd's Engine API.
   */
  embeddedInDocker: boolean;
  /**
   * The Engine API socket the caller named: the one of a `docker://`
   * address, or the `dockerEngine` connect option. Never guessed: a dockerd
   * reached through a TCP or unix front may be any dockerd.
   */
  dockerEngine: string | undefined;
  /** BuildKit's version (`v0.24.0`) as Info reports it; undefined before v0.11, which has no Info call. */
  version: string | undefined;
}

/**
 * `docker://` is dockerd's BuildKit by definition. Behind a socket or TCP
 * front, dockerd's single worker gives it away (its id is "moby"); that tells
 * which exporters there are, never which dockerd it is.
 */
export async function daemonKind(
  endpoint: Endpoint,
  dockerEngine: string | undefined,
  daemon: { listWorkers(): Promise<Worker[]>; info(): Promise<BuildKitInfo> },
): Promise<DaemonKind> {
  const info = await daemon.info();
  const version = info.status === "ok" ? info.buildkitVersion.version : undefined;
  if (endpoint.kind === "docker") return { embeddedInDocker: true, dockerEngine: endpoint.socketPath, version };
  const workers = await daemon.listWorkers();
  return { embeddedInDocker: workers.length > 0 && workers.every((w) => w.id === "moby"), dockerEngine, version };
}

/**
 * Whether the daemon is BuildKit `v0.MINOR` or later. Without a version
 * (no Info call) it is older than v0.11; v0.0.0, or no number at all, is a
 * development build of today's BuildKit.
 */
function atLeast(kind: DaemonKind, minor: number): boolean {
  if (kind.version === undefined) return false; // before v0.11: nothing newer can be counted on
  const [major = 0, min = 0, patch = 0] = kind.version.replace(/^v/, "").split(/[.+-]/).map(Number);
  if (!(major || min || patch)) return true;
  return major > 0 || min >= minor;
}

/** Exporters one solve takes: several from BuildKit v0.13 on, one before. */
export function exporterLimit(kind: DaemonKind): number {
  return atLeast(kind, 13) ? Number.POSITIVE_INFINITY : 1;
}

/**
 * Refuses, before anything runs, what the daemon would ignore or fail on
 * obscurely: an older Dockerfile frontend takes an unknown attribute in
 * silence and builds without it.
 */
export function checkDaemonSupports(options: BuildOptions, kind: DaemonKind, address: string): void {
  const age = kind.version ? `BuildKit ${kind.version}` : "older than v0.11 (it has no Info call)";
  if (options.provenance && (kind.embeddedInDocker || !atLeast(kind, 11))) {
    const why = kind.embeddedInDocker ? "a dockerd's BuildKit stores images in dockerd's image store, which keeps no attestations" : `it is ${age}`;
    throw new BuildKitNodeError("UNIMPLEMENTED", `provenance attestations need a standalone BuildKit v0.11 or later; ${address} cannot: ${why}`);
  }
  for (const [option, entries] of [["cacheFrom", options.cacheFrom], ["cacheTo", options.cacheTo]] as const) {
    for (const { type } of cacheEntries(entries, option)) {
      if (type === "local") {
        // The daemon would read or write the directory through a content store the client serves over the session.
        throw new BuildKitNodeError("UNIMPLEMENTED", `${option}: type "local" needs a content store served by the client, which buildkit-node does not serve; use type "registry" (or "inline")`);
      }
      if (option === "cacheTo" && kind.embeddedInDocker && type !== "inline") {
        throw new BuildKitNodeError("UNIMPLEMENTED", `cacheTo: ${address} is a dockerd's BuildKit, which exports cache only inline (type "inline", pushed with the image); type "${type}" needs a standalone buildkitd`);
      }
    }
  }
  if (Object.keys(options.extraContexts ?? {}).length > 0 && !atLeast(kind, 11)) {
    throw new BuildKitNodeError(
      "UNIMPLEMENTED",
      `named contexts (extraContexts) need BuildKit v0.10 or later, and ${address} is ${age}: its Dockerfile frontend would read each name as an image on Docker Hub`,
    );
  }
}

/**
 * The `dockerEngine` connect option as a socket path: `unix:///path` or an
 * absolute path. With a `docker://` address it may only repeat that socket.
 */
export function dockerEngineSocket(option: string | undefined, endpoint: Endpoint): string | undefined {
  if (option === undefined) return undefined;
  const path = dockerEngineSocketPath(option, "dockerEngine");
  if (endpoint.kind === "docker" && path !== endpoint.socketPath) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `dockerEngine ${path} contradicts the address, which names the Engine at ${endpoint.socketPath}`);
  }
  return path;
}

/** The socket path a `dockerEngine` option names (`unix:///path` or `/path`); `field` names it in the refusal. */
export function dockerEngineSocketPath(option: unknown, field: string): string {
  const path = typeof option === "string" && option.startsWith("unix://") ? option.slice("unix://".length) : option;
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `${field} must be a unix socket, unix:///path or an absolute path, not ${JSON.stringify(option)}`);
  }
  return path;
}

/** The local Docker Engine as the docker CLI finds it: `DOCKER_HOST` when it is a unix socket, else /var/run/docker.sock. */
export function localDockerSocket(): string {
  const dockerHost = process.env.DOCKER_HOST;
  return dockerHost?.startsWith("unix://") ? dockerHost.slice("unix://".length) : DEFAULT_DOCKER_SOCKET;
}
