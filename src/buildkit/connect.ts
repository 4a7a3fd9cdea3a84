import { existsSync, readFileSync } from "node:fs";
import { BuildKitNodeError, findCause, TransportError } from "../errors.js";
import { createLogger } from "../log.js";
import { DEFAULT_DOCKER_SOCKET, parseAddress } from "../transport/address.js";
import { DEFAULT_CONNECT_TIMEOUT_MS, openChannel } from "../transport/channel.js";
import { isTlsError } from "../transport/dial.js";
import type { KeepaliveOptions } from "../transport/http2-connection.js";
import type { TlsOptions } from "../transport/tls-options.js";
import { BuildKitClient } from "./client.js";
import { dockerEngineSocket, localDockerSocket } from "./daemon-kind.js";
import { MAX_CALL_TIMEOUT_MS, validateConnectOptions } from "./validate-options.js";

const log = createLogger("connect");

const DEFAULT_BUILDKITD_SOCKET = "/run/buildkit/buildkitd.sock";

export interface ConnectOptions {
  /** TLS for a `tcp://` address: `{ ca, cert, key, serverName }` as PEM text. */
  tls?: TlsOptions;
  /** Bounds connecting, handshakes and the first call included. Default 30 s. */
  connectTimeoutMs?: number;
  /** gRPC compression of the messages sent to the daemon. Default none; a Depot machine may ask for `gzip`. */
  compression?: "gzip" | "identity";
  /**
   * HTTP/2 PING keepalive while calls (a build) are open: after `intervalMs`
   * (default 30 s) without a frame from the daemon it is pinged, and if it
   * does not answer within `timeoutMs` (default 20 s) the connection is
   * declared dead and its calls fail with UNAVAILABLE. A daemon that is busy
   * but alive answers pings, so a long quiet step is never failed. Pings
   * stay within gRPC servers' default ping policy (see README).
   */
  keepalive?: KeepaliveOptions;
  signal?: AbortSignal;
  /**
   * The Docker Engine API socket (`unix:///var/run/docker.sock` or a path)
   * that goes with this BuildKit:
   *
   * - for a dockerd's BuildKit reached through a unix or TCP front, that
   *   dockerd's own socket. Its BuildKit keeps images in that dockerd, so
   *   pushing (`push: true`) and saving (`{ type: "docker", dest }`) go
   *   through its Engine API. Without this option such builds are refused
   *   before they start: which dockerd is behind a front is never guessed.
   *   A `docker://` address names its Engine already.
   * - for a standalone buildkitd, where `{ type: "docker", load: true }`
   *   loads the image (default: `DOCKER_HOST` when it is a unix socket, else
   *   /var/run/docker.sock).
   */
  dockerEngine?: string;
}

/**
 * Connects to a BuildKit daemon and checks that it answers.
 *
 * `address` is `unix:///path`, `tcp://host:port` (with `options.tls` for
 * TLS), `docker://` or `docker:///path/to/docker.sock`. Without an address:
 * `BUILDKIT_HOST` (with `BUILDKIT_TLS_CA`, `BUILDKIT_TLS_CERT`,
 * `BUILDKIT_TLS_KEY` file paths and `BUILDKIT_TLS_SERVER_NAME`), else
 * buildkitd's socket, else dockerd's (`DOCKER_HOST` when it is a unix socket).
 * `DEBUG=buildkit-node:*` logs each step.
 *
 * Rejects with a TransportError naming the address: INVALID_ARGUMENT,
 * UNAVAILABLE, TLS, TIMEOUT or CANCELED.
 */
export async function connect(address?: string, options: ConnectOptions = {}): Promise<BuildKitClient> {
  try {
    validateConnectOptions(address, options);
  } catch (err) {
    throw new TransportError("INVALID_ARGUMENT", typeof address === "string" ? address : "", (err as Error).message);
  }
  if (address !== undefined) return connectTo(address, options);

  const host = process.env.BUILDKIT_HOST;
  if (host) {
    log(`BUILDKIT_HOST=${host}`);
    return connectTo(host, { ...options, tls: options.tls ?? tlsFromEnvironment(host) });
  }
  log("BUILDKIT_HOST is not set");

  const tried: string[] = ["BUILDKIT_HOST (not set)"];
  for (const candidate of localCandidates()) {
    if (!existsSync(candidate.path)) {
      log(`${candidate.path}: not found`);
      tried.push(`${candidate.address} (no socket)`);
      continue;
    }
    try {
      log(`trying ${candidate.address}`);
      const client = await connectTo(candidate.address, options);
      log(`using ${candidate.address}`);
      return client;
    } catch (err) {
      if (err instanceof BuildKitNodeError && err.code === "CANCELED") throw err;
      const why = err instanceof Error ? err.message : String(err);
      log(`${candidate.address}: ${why}`);
      tried.push(`${candidate.address} (${why})`);
    }
  }
  throw new TransportError("UNAVAILABLE", "", `no BuildKit daemon found; tried: ${tried.join("; ")}`);
}

function localCandidates(): { address: string; path: string }[] {
  const dockerSocket = localDockerSocket();
  return [
    { address: `unix://${DEFAULT_BUILDKITD_SOCKET}`, path: DEFAULT_BUILDKITD_SOCKET },
    { address: dockerSocket === DEFAULT_DOCKER_SOCKET ? "docker://" : `docker://${dockerSocket}`, path: dockerSocket },
  ];
}

async function connectTo(address: string, options: ConnectOptions): Promise<BuildKitClient> {
  const started = Date.now();
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const dockerEngine = dockerEngineOption(options.dockerEngine, address);
  const channel = await openChannel(address, {
    tls: options.tls,
    connectTimeoutMs: timeoutMs,
    keepalive: options.keepalive,
    compression: options.compression,
    signal: options.signal,
  });
  const client = new BuildKitClient(channel, { dockerEngine });
  try {
    // One cheap call proves the daemon accepted us and speaks BuildKit's API.
    // It matters for mutual TLS: with TLS 1.3 a server refuses a client
    // certificate only after the client's side of the handshake is done.
    await client.listWorkers({
      timeoutMs: Math.min(Math.max(1, timeoutMs - (Date.now() - started)), MAX_CALL_TIMEOUT_MS),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (err) {
    await client.close();
    throw probeError(err, address);
  }
  return client;
}

/** Checks `dockerEngine` before dialing; its errors name the address, as every connect error does. */
function dockerEngineOption(option: string | undefined, address: string): string | undefined {
  try {
    return dockerEngineSocket(option, parseAddress(address));
  } catch (err) {
    if (err instanceof TransportError || !(err instanceof BuildKitNodeError)) throw err;
    throw new TransportError(err.code, address, err.message);
  }
}

function probeError(err: unknown, address: string): TransportError {
  const tlsCause = findCause(err, (e) => isTlsError(e as { code?: unknown }));
  if (tlsCause) {
    return new TransportError("TLS", address, `TLS with ${address} failed: ${tlsCause.message}`, { cause: err });
  }
  if (err instanceof BuildKitNodeError) {
    if (err.code === "TIMEOUT") return new TransportError("TIMEOUT", address, `timed out connecting to ${address}`, { cause: err });
    if (err.code === "UNIMPLEMENTED") {
      return new TransportError("UNAVAILABLE", address, `${address} does not serve BuildKit's Control API`, { cause: err });
    }
    if (err instanceof TransportError) return err;
    if (err.code === "CANCELED") return new TransportError("CANCELED", address, `connecting to ${address} was aborted`, { cause: err });
    return new TransportError(err.code, address, `${address} did not answer as BuildKit: ${err.message}`, { cause: err });
  }
  return new TransportError("UNKNOWN", address, `connecting to ${address} failed: ${String(err)}`, { cause: err });
}

/** TLS settings from BUILDKIT_TLS_* (file paths, as buildctl reads them). */
function tlsFromEnvironment(address: string): TlsOptions | undefined {
  const env = process.env;
  const file = (name: string): string | undefined => {
    const path = env[name];
    if (!path) return undefined;
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new TransportError("INVALID_ARGUMENT", address, `TLS for ${address}: ${name}=${path} cannot be read (${why})`, { cause: err });
    }
  };
  const ca = file("BUILDKIT_TLS_CA");
  const cert = file("BUILDKIT_TLS_CERT");
  const key = file("BUILDKIT_TLS_KEY");
  const serverName = env.BUILDKIT_TLS_SERVER_NAME || undefined;
  if (!ca && !cert && !key && !serverName) return undefined;
  log(`TLS from BUILDKIT_TLS_*${serverName ? `, server name ${serverName}` : ""}`);
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(serverName ? { serverName } : {}) };
}
