import type { Transport } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import * as net from "node:net";
import { TransportError } from "../errors.js";
import { createLogger } from "../log.js";
import { type Endpoint, parseAddress } from "./address.js";
import { dial, serverNameOf } from "./dial.js";
import { DEFAULT_KEEPALIVE_INTERVAL_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS, type KeepaliveOptions } from "./http2-connection.js";
import { type ConnectionLoss, Http2Connections } from "./http2-connections.js";
import { explainNotHttp2 } from "./peer-probe.js";
import { type TlsSettings, tlsSettingsFor } from "./tls-context.js";
import type { TlsOptions } from "./tls-options.js";

const log = createLogger("transport");

export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

/** BuildKit's own gRPC message limit, both ways. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** A connection without calls for this long is closed; the next call dials again. */
const IDLE_CONNECTION_TIMEOUT_MS = 5 * 60_000;

export interface ChannelOptions {
  tls?: TlsOptions | undefined;
  /** Bounds each connection attempt, handshakes included. Default 30 s. */
  connectTimeoutMs?: number | undefined;
  /** HTTP/2 PING keepalive while calls are open. Default: every 30 s of silence, 20 s to answer. */
  keepalive?: KeepaliveOptions | undefined;
  signal?: AbortSignal | undefined;
  /** Compress the messages sent (`gzip`, as a Depot machine may ask); answers are accepted gzip'd either way. Default none. */
  compression?: "gzip" | "identity" | undefined;
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
   * The last time a connection of this channel was lost with calls open,
   * and why (a reset, a silent peer, a GOAWAY): the reason a call that
   * failed meanwhile should report.
   */
  readonly lastConnectionLoss: ConnectionLoss | undefined;
  /**
   * Starts a call on the channel's connection and hands over its HTTP/2
   * stream, for a caller that frames the call's messages itself. The stream
   * lives under the same care as any call's: keepalive, and a lost
   * connection failing it with the TransportError saying why.
   */
  openStream(path: string, headers: http2.OutgoingHttpHeaders): Promise<http2.ClientHttp2Stream>;
  /** Closes the HTTP/2 connection; calls in flight fail with CANCELED. Idempotent. */
  close(): void;
}

/**
 * Opens a channel and its first connection eagerly, so that a bad address,
 * a missing socket, a refused port, a failed TLS handshake or a server that
 * does not speak HTTP/2 surface here as a TransportError rather than on the
 * first call.
 */
export async function openChannel(address: string, options: ChannelOptions = {}): Promise<Channel> {
  const endpoint = parseAddress(address);
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (options.tls && endpoint.kind !== "tcp") {
    // Refuse rather than silently connect without the TLS the caller asked for.
    throw new TransportError("INVALID_ARGUMENT", address, `TLS options apply only to tcp:// addresses, not ${address}`);
  }
  const tlsSettings = options.tls ? tlsSettingsFor(options.tls, address) : undefined;
  const origin = originOf(endpoint, tlsSettings);
  const connections = new Http2Connections({
    origin,
    address,
    dial: (signal) => dial(endpoint, address, tlsSettings, signal),
    connectTimeoutMs: timeoutMs,
    keepalive: {
      intervalMs: options.keepalive?.intervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS,
      timeoutMs: options.keepalive?.timeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
    },
    idleTimeoutMs: IDLE_CONNECTION_TIMEOUT_MS,
    // A TLS channel's failures are the handshake's, which says enough.
    ...(tlsSettings ? {} : { explainEarlyFailure: (cause: TransportError, signal: AbortSignal) => explainNotHttp2(endpoint, address, cause, signal) }),
  });

  log(`dialing ${describe(endpoint, tlsSettings)}`);
  try {
    await connections.connect(options.signal);
  } catch (err) {
    connections.close(`connecting to ${address} failed`);
    throw err;
  }
  log(`connected to ${address}`);

  const requests = withRepeatedHeaders(connections);
  const transport = createGrpcTransport({
    baseUrl: origin,
    sessionManager: requests,
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
    ...(options.compression === "gzip" ? { sendCompression: compressionGzip } : {}),
  });
  return {
    address,
    endpoint,
    transport,
    get lastConnectionLoss() {
      return connections.lastLoss;
    },
    async openStream(path, headers) {
      const stream = await requests.request("POST", path, headers, {});
      // Data read from it proves the connection alive, as for any call.
      stream.on("data", () => requests.notifyResponseByteRead(stream));
      return stream;
    },
    close() {
      connections.close(`the client for ${address} was closed`);
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

type SessionManager = Pick<Http2Connections, "authority" | "request" | "notifyResponseByteRead">;

function withRepeatedHeaders(manager: SessionManager): SessionManager {
  return {
    get authority() {
      return manager.authority;
    },
    request(method: string, path: string, headers: http2.OutgoingHttpHeaders, options: http2.ClientSessionRequestOptions) {
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
function originOf(endpoint: Endpoint, tlsSettings: TlsSettings | undefined): string {
  if (endpoint.kind !== "tcp") return "http://localhost";
  const host = serverNameOf(endpoint.host, tlsSettings);
  const authority = net.isIPv6(host) ? `[${host}]` : host;
  // gRPC servers (buildkitd included) take :authority as the server name.
  return tlsSettings ? `https://${authority}` : `http://${authority}:${endpoint.port}`;
}

function describe(endpoint: Endpoint, tlsSettings: TlsSettings | undefined): string {
  switch (endpoint.kind) {
    case "unix":
      return `unix socket ${endpoint.path}`;
    case "docker":
      return `dockerd at ${endpoint.socketPath} (POST /grpc, Upgrade: h2c)`;
    case "tcp":
      if (!tlsSettings) return `tcp ${endpoint.host}:${endpoint.port} (plaintext)`;
      return `tcp ${endpoint.host}:${endpoint.port} (TLS, server name ${serverNameOf(endpoint.host, tlsSettings)}${tlsSettings.clientCertificate ? ", client certificate" : ""})`;
  }
}
