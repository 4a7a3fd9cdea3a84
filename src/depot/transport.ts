import { type CallOptions, type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { dialUrl } from "../transport/dial.js";
import { DEFAULT_KEEPALIVE_INTERVAL_MS, DEFAULT_KEEPALIVE_TIMEOUT_MS, type KeepaliveOptions } from "../transport/http2-connection.js";
import { Http2Connections } from "../transport/http2-connections.js";
import { BuildService } from "../gen/depot/cli/v1/build_pb.js";
import { ProjectService } from "../gen/depot/core/v1/project_pb.js";
import { depotCallError } from "./errors.js";
import { withRetry } from "./retry.js";

export const DEFAULT_DEPOT_API_URL = "https://api.depot.dev";

/** Bounds one API call (one attempt) unless a method says otherwise. */
export const API_CALL_TIMEOUT_MS = 30_000;
/** An API connection without calls for this long is closed. */
const API_IDLE_CONNECTION_MS = 60_000;

/** The Depot services this library calls, over one Connect transport. */
export interface DepotApi {
  readonly apiUrl: string;
  readonly builds: Client<typeof BuildService>;
  readonly projects: Client<typeof ProjectService>;
}

/**
 * Connect protocol with binary protobuf, as Depot's SDKs speak it. HTTP/2 by
 * default (h2c with prior knowledge on an `http://` URL); "1.1" for proxies
 * that only speak that. One transport serves every token: the token goes in
 * each call's headers (see `callOptions`), so the organization token and a
 * build's token never mix.
 */
export function createDepotApi(apiUrl: string, httpVersion: "1.1" | "2", keepalive: KeepaliveOptions = {}): DepotApi {
  const transport =
    httpVersion === "2"
      ? createConnectTransport({ baseUrl: apiUrl, httpVersion, useBinaryFormat: true, sessionManager: http2Connections(apiUrl, keepalive) })
      : createConnectTransport({ baseUrl: apiUrl, httpVersion, useBinaryFormat: true });
  return { apiUrl, builds: createClient(BuildService, transport), projects: createClient(ProjectService, transport) };
}

/**
 * HTTP/2 connections to the API with the same care as a daemon's: every
 * error handled, PING keepalive while calls are open, a connection idle
 * for a while checked before it takes a call.
 */
function http2Connections(apiUrl: string, keepalive: KeepaliveOptions): Http2Connections {
  const url = new URL(apiUrl);
  return new Http2Connections({
    origin: url.origin,
    address: url.origin,
    dial: (signal) => dialUrl(url, signal),
    connectTimeoutMs: API_CALL_TIMEOUT_MS,
    keepalive: {
      intervalMs: keepalive.intervalMs ?? DEFAULT_KEEPALIVE_INTERVAL_MS,
      timeoutMs: keepalive.timeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
    },
    idleTimeoutMs: API_IDLE_CONNECTION_MS,
  });
}

/** The headers that authenticate a call with `token`: `Authorization: Bearer <token>`. */
export function authHeaders(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** One call's options: `Authorization: Bearer <token>`, its signal and timeout. */
export function callOptions(token: string, options: { signal?: AbortSignal | undefined; timeoutMs?: number }): CallOptions {
  return {
    headers: authHeaders(token),
    timeoutMs: options.timeoutMs ?? API_CALL_TIMEOUT_MS,
    ...(options.signal ? { signal: options.signal } : {}),
  };
}

export interface DepotCallOptions {
  signal?: AbortSignal | undefined;
  /** Per attempt. Default 30 s. */
  timeoutMs?: number;
  /** Retries transient failures (see retry.ts), up to this many attempts in all. Default 1: no retry. */
  maxAttempts?: number;
  /** False for a call that must not run twice (CreateBuild): retried only if it cannot have reached the server. Default true. */
  idempotent?: boolean;
  /** Every attempt ends by this time (epoch ms), and no retry starts past it. */
  deadline?: number;
}

/**
 * Runs one Depot RPC with `token`, retrying transient failures when asked;
 * any failure comes out as a DepotError naming `method` (or an AbortError
 * when `signal` ended it), with the token masked.
 */
export async function callDepot<T>(method: string, token: string, run: (options: CallOptions) => Promise<T>, options: DepotCallOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? API_CALL_TIMEOUT_MS;
  const once = () => {
    const left = options.deadline === undefined ? timeoutMs : Math.max(1, Math.min(timeoutMs, options.deadline - Date.now()));
    return run(callOptions(token, { signal: options.signal, timeoutMs: left }));
  };
  try {
    return await withRetry(method, once, {
      maxAttempts: options.maxAttempts ?? 1,
      ...(options.idempotent !== undefined ? { idempotent: options.idempotent } : {}),
      signal: options.signal,
      ...(options.deadline !== undefined ? { deadline: options.deadline } : {}),
    });
  } catch (err) {
    throw depotCallError(method, err, [token], options.signal);
  }
}
