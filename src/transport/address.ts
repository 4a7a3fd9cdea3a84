import { TransportError } from "../errors.js";

/** Where a BuildKit daemon listens, parsed from an address string. */
export type Endpoint =
  /** buildkitd's own socket: `unix:///run/buildkit/buildkitd.sock`. */
  | { kind: "unix"; path: string }
  /** buildkitd on TCP, plaintext or TLS: `tcp://host:port`. */
  | { kind: "tcp"; host: string; port: number }
  /** The BuildKit embedded in dockerd, reached through the Engine API socket. */
  | { kind: "docker"; socketPath: string };

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

const supported = "unix:///path, tcp://host:port, docker:// or docker:///path/to/docker.sock";

/**
 * Parses `unix:///path`, `tcp://host:port`, `docker://` (the default Engine
 * socket) and `docker:///path/to/docker.sock`. Anything else is an
 * INVALID_ARGUMENT TransportError naming the address.
 */
export function parseAddress(address: string): Endpoint {
  const invalid = (why: string) =>
    new TransportError("INVALID_ARGUMENT", address, `invalid BuildKit address "${address}": ${why} (expected ${supported})`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address)?.[1]?.toLowerCase();
  if (!scheme) throw invalid("no scheme");
  const rest = address.slice(scheme.length + 3);
  switch (scheme) {
    case "unix": {
      if (!rest.startsWith("/")) throw invalid("the socket path must be absolute");
      return { kind: "unix", path: rest };
    }
    case "docker": {
      if (rest === "") return { kind: "docker", socketPath: DEFAULT_DOCKER_SOCKET };
      if (!rest.startsWith("/")) throw invalid("only a local Engine socket path is supported after docker://");
      return { kind: "docker", socketPath: rest };
    }
    case "tcp": {
      const match = /^(\[[0-9a-f:.]+\]|[^:/[\]]+):(\d+)\/?$/i.exec(rest);
      if (!match) throw invalid("expected tcp://host:port");
      const port = Number(match[2]);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${match[2]} is out of range`);
      const host = match[1]!.replace(/^\[(.*)\]$/, "$1");
      return { kind: "tcp", host, port };
    }
    default:
      throw invalid(`unsupported scheme "${scheme}://"`);
  }
}
