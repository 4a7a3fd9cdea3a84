import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { TransportError } from "../errors.js";
import { createLogger } from "../log.js";
import { type Endpoint, parseAddress } from "./address.js";
import { dial, dialError, serverNameOf } from "./dial.js";
import { StreamRelay } from "./relay.js";
import type { TlsOptions } from "./tls-options.js";

const log = createLogger("transport");

export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/** BuildKit's own gRPC message limit, both ways. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export interface ChannelOptions {
  tls?: TlsOptions | undefined;
  /** Bounds each connection attempt, handshakes included. Default 30 s. */
  connectTimeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * A gRPC channel to one daemon: a connect-es Transport over HTTP/2 whose
 * connections come from our own dialer, so that unix sockets, mutual TLS with
 * a server name that is not the address, and dockerd's upgraded socket all
 * look the same to the layers above.
 */
export interface Channel {
  /** The address as the caller gave it. */
  readonly address: string;
  readonly endpoint: Endpoint;
  readonly transport: Transport;
  /**
   * The last error a connection of this channel failed with, and when. HTTP/2
   * reports a broken connection to its streams as a bare CANCEL; this keeps
   * the reason (a TLS alert, a reset) for the error a caller sees.
   */
  readonly lastConnectionError: { error: Error; at: number } | undefined;
  /** Opens another raw byte stream to the same daemon (same TLS, same timeout). */
  dial(signal?: AbortSignal): Promise<Duplex>;
  /**
   * Starts a call on the channel's connection and hands over its HTTP/2
   * stream, for a caller that frames the call's messages itself (the build
   * session's tunnel, whose every byte would otherwise be copied three times
   * on the way). Headers go out as for any call; pseudo-headers are set here.
   */
  openStream(path: string, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream>;
  /** Closes the HTTP/2 connection; calls in flight fail. Idempotent. */
  close(): void;
}

/**
 * Opens a channel and its first connection eagerly, so that a bad address,
 * a missing socket, a refused port or a failed TLS handshake surface here as
 * a TransportError rather than on the first call.
 */
export async function openChannel(address: string, options: ChannelOptions = {}): Promise<Channel> {
  const endpoint = parseAddress(address);
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const tlsOptions = options.tls;
  if (tlsOptions && endpoint.kind !== "tcp") {
    // Refuse rather than silently connect without the TLS the caller asked for.
    throw new TransportError("INVALID_ARGUMENT", address, `TLS options apply only to tcp:// addresses, not ${address}`);
  }
  const dialOnce = (signal?: AbortSignal) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    return dial(endpoint, address, tlsOptions, signal ? AbortSignal.any([signal, timeout]) : timeout);
  };

  log(`dialing ${describe(endpoint, tlsOptions)}`);
  const first = await dialOnce(options.signal);
  log(`connected to ${address}`);

  let lastConnectionError: Channel["lastConnectionError"];
  const watch = (socket: Duplex): Duplex => {
    socket.on("error", (error: Error) => {
      lastConnectionError = { error: dialError(error, address, false), at: Date.now() };
      log(`connection to ${address} failed: ${error.message}`);
    });
    return socket;
  };
  let unused: Duplex | undefined = watch(first);
  const sessionManager = new Http2SessionManager(
    baseUrlOf(endpoint, tlsOptions),
    { idleConnectionTimeoutMs: 5 * 60_000 },
    {
      // The first connection is the one dialed above; later ones (after an
      // idle close or a dropped connection) are dialed on demand.
      createConnection: () => {
        if (unused) {
          const socket = unused;
          unused = undefined;
          return socket;
        }
        log(`reconnecting to ${address}`);
        return watch(new StreamRelay(dialOnce()));
      },
    },
  );
  const requests = withRepeatedHeaders(sessionManager);
  const transport = createGrpcTransport({
    baseUrl: baseUrlOf(endpoint, tlsOptions),
    sessionManager: requests,
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
  });
  let closed = false;
  return {
    address,
    endpoint,
    transport,
    get lastConnectionError() {
      return lastConnectionError;
    },
    dial: dialOnce,
    async openStream(path, headers) {
      const stream = await requests.request("POST", path, headers, {});
      // What the session manager's keepalive counts for the calls it frames.
      stream.on("data", () => requests.notifyResponseByteRead(stream));
      return stream;
    },
    close() {
      if (closed) return;
      closed = true;
      unused?.destroy();
      sessionManager.abort();
      log(`closed ${address}`);
    },
  };
}

/**
 * Header names whose comma-joined values are sent as separate header fields.
 * Fetch-style Headers (what connect-es takes) join repeated values with ", ",
 * but the daemon matches each `X-Docker-Expose-Session-Grpc-Method` field on
 * its own. Method paths never contain ", ", so splitting is exact.
 */
const REPEATED_HEADERS = ["x-docker-expose-session-grpc-method"];

type SessionManager = Pick<Http2SessionManager, "authority" | "request" | "notifyResponseByteRead">;

function withRepeatedHeaders(manager: SessionManager): SessionManager {
  return {
    get authority() {
      return manager.authority;
    },
    request(method: string, path: string, headers: http2.OutgoingHttpHeaders, options: Parameters<SessionManager["request"]>[3]) {
      const split: http2.OutgoingHttpHeaders = { ...headers };
      for (const name of REPEATED_HEADERS) {
        const value = split[name];
        if (typeof value === "string") split[name] = value.split(", ");
      }
      return manager.request(method, path, split, options);
    },
    notifyResponseByteRead: (stream: http2.ClientHttp2Stream) => manager.notifyResponseByteRead(stream),
  };
}

/** The URL only sets `:scheme` and `:authority`; our dialer picks the socket. */
function baseUrlOf(endpoint: Endpoint, tlsOptions: TlsOptions | undefined): string {
  if (endpoint.kind !== "tcp") return "http://localhost";
  const host = serverNameOf(endpoint.host, tlsOptions);
  const authority = net.isIPv6(host) ? `[${host}]` : host;
  // gRPC servers (buildkitd included) take :authority as the server name.
  return tlsOptions ? `https://${authority}` : `http://${authority}:${endpoint.port}`;
}

function describe(endpoint: Endpoint, tlsOptions: TlsOptions | undefined): string {
  switch (endpoint.kind) {
    case "unix":
      return `unix socket ${endpoint.path}`;
    case "docker":
      return `dockerd at ${endpoint.socketPath} (POST /grpc, Upgrade: h2c)`;
    case "tcp":
      if (!tlsOptions) return `tcp ${endpoint.host}:${endpoint.port} (plaintext)`;
      return `tcp ${endpoint.host}:${endpoint.port} (TLS, server name ${serverNameOf(endpoint.host, tlsOptions)}${tlsOptions.cert ? ", client certificate" : ""})`;
  }
}
