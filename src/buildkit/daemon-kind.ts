// What kind of BuildKit a client talks to, and which Docker Engine goes with
// it. Asked once per client, when a build first needs to know.
import { BuildKitNodeError } from "../errors.js";
import { DEFAULT_DOCKER_SOCKET, type Endpoint } from "../transport/address.js";
import type { BuildKitInfo, Worker } from "./client.js";

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
}

/**
 * `docker://` is dockerd's BuildKit by definition. Behind a socket or TCP
 * front, dockerd's single worker gives it away (its id is "moby"); that tells
 * which exporters there are, never which dockerd it is.
 */
export async function daemonKind(endpoint: Endpoint, dockerEngine: string | undefined, listWorkers: () => Promise<Worker[]>): Promise<DaemonKind> {
  if (endpoint.kind === "docker") return { embeddedInDocker: true, dockerEngine: endpoint.socketPath };
  const workers = await listWorkers();
  return { embeddedInDocker: workers.length > 0 && workers.every((w) => w.id === "moby"), dockerEngine };
}

/** Exporters one solve takes: several from BuildKit v0.13 on, one before (and without Info, before v0.11). */
export function exporterLimit(info: BuildKitInfo): number {
  if (info.status !== "ok") return 1;
  const [major = 0, minor = 0, patch = 0] = info.buildkitVersion.version.replace(/^v/, "").split(/[.+-]/).map(Number);
  // v0.0.0 (or no number at all) is a development build of today's BuildKit.
  const development = !(major || minor || patch);
  return development || major > 0 || minor >= 13 ? Number.POSITIVE_INFINITY : 1;
}

/**
 * The `dockerEngine` connect option as a socket path: `unix:///path` or an
 * absolute path. With a `docker://` address it may only repeat that socket.
 */
export function dockerEngineSocket(option: string | undefined, endpoint: Endpoint): string | undefined {
  if (option === undefined) return undefined;
  const path = option.startsWith("unix://") ? option.slice("unix://".length) : option;
  if (!path.startsWith("/")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `dockerEngine must be a unix socket, unix:///path or an absolute path, not "${option}"`);
  }
  if (endpoint.kind === "docker" && path !== endpoint.socketPath) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `dockerEngine ${path} contradicts the address, which names the Engine at ${endpoint.socketPath}`);
  }
  return path;
}

/** The local Docker Engine as the docker CLI finds it: `DOCKER_HOST` when it is a unix socket, else /var/run/docker.sock. */
export function localDockerSocket(): string {
  const dockerHost = process.env.DOCKER_HOST;
  return dockerHost?.startsWith("unix://") ? dockerHost.slice("unix://".length) : DEFAULT_DOCKER_SOCKET;
}
