import { Code, ConnectError } from "@connectrpc/connect";
import type * as http2 from "node:http2";
import type { Duplex } from "node:stream";
import { findCause, TransportError } from "../errors.js";
import { createLogger } from "../log.js";
import { abortError } from "./dial.js";
import { Connection, type KeepaliveOptions } from "./http2-connection.js";
import { raceAbort } from "./race-abort.js";

const log = createLogger("transport");

export interface Http2ConnectionsOptions {
  /** `http://host:port` or `https://name`: the `:scheme` and `:authority` of every request. */
  origin: string;
  /** The address as the caller gave it, for errors. */
  address: string;
  /** Opens the byte stream of a new connection; rejects with a TransportError. */
  dial(signal: AbortSignal): Promise<Duplex>;
  /** Bounds dialing and the server's first SETTINGS frame. */
  connectTimeoutMs: number;
  keepalive: Required<KeepaliveOptions>;
  /** A connection without calls for this long is closed (the next call dials again). */
  idleTimeoutMs: number;
  /**
   * Says what answered when a new connection failed before the server's
   * first SETTINGS frame (not HTTP/2, a TLS port, …). Default: `cause`.
   */
  explainEarlyFailure?(cause: TransportError, signal: AbortSignal): Promise<TransportError>;
}

/** A connection lost while calls were open: what broke it, and when. */
export interface ConnectionLoss {
  error: TransportError;
  at: number;
}

const notSent = new WeakSet<Error>();

/**
 * Whether a failed call never left this process: its connection could not
 * be opened (refused, TLS, timeout), so the server cannot have seen it and
 * even a call that is not idempotent may be tried again.
 */
export function wasNeverSent(err: unknown): boolean {
  return findCause(err, (e) => notSent.has(e)) !== undefined;
}

/**
 * The HTTP/2 connections of one gRPC channel, as connect-es's transport
 * asks for them (`authority`, `request`, `notifyResponseByteRead`): one
 * connection at a time, dialed on demand with our own dialer, kept alive
 * with PINGs while calls are open, closed when idle.
 *
 * Every socket, session and stream has an `error` listener for its whole
 * life, so nothing a peer does can crash the process. When a connection is
 * lost (reset, closed, silent, GOAWAY with an error), its open streams are
 * failed first with a ConnectError `unavailable` whose cause is the
 * TransportError saying why, so that every call sees the same reason,
 * whatever the timing, instead of HTTP/2's bare CANCEL.
 */
export class Http2Connections {
  readonly authority: string;
  readonly #options: Http2ConnectionsOptions;
  #current: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  readonly #all = new Set<Connection>();
  readonly #closeController = new AbortController();
  #intervalMs: number;
  #lastLoss: ConnectionLoss | undefined;

  constructor(options: Http2ConnectionsOptions) {
    this.#options = options;
    this.authority = new URL(options.origin).origin;
    this.#intervalMs = options.keepalive.intervalMs;
  }

  /** The last time a connection was lost with calls open, and why. */
  get lastLoss(): ConnectionLoss | undefined {
    return this.#lastLoss;
  }

  /** Opens a connection now, if none is open, and waits for the server's SETTINGS. */
  async connect(signal?: AbortSignal): Promise<void> {
    await this.#ready(signal);
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: http2.ClientSessionRequestOptions,
  ): Promise<http2.ClientHttp2Stream> {
    for (let attempt = 0; ; attempt++) {
      let connection: Connection;
      try {
        connection = await this.#ready();
      } catch (err) {
        throw unsentCallError(err);
      }
      try {
        return connection.open({ ...headers, ":method": method, ":path": path }, options);
      } catch (err) {
        // The session went away between our check and the request (a GOAWAY
        // just arrived): the stream was never sent, so a new connection may take it.
        if (attempt < 2 && connection.unusable) continue;
        throw unsentCallError(err);
      }
    }
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    const current = this.#current;
    const connection = current?.carries(stream) ? current : [...this.#all].find((c) => c.carries(stream));
    connection?.frameReceived(true);
  }

  /** Fails every open call with CANCELED (a TransportError naming why) and closes every connection. Idempotent. */
  close(reason: string): void {
    if (this.#closeController.signal.aborted) return;
    this.#closeController.abort();
    const error = new TransportError("CANCELED", this.#options.address, reason);
    for (const connection of this.#all) connection.destroy(error);
    this.#all.clear();
    this.#current = undefined;
  }

  async #ready(signal?: AbortSignal): Promise<Connection> {
    const current = this.#current;
    if (current && !current.unusable) {
      // A connection that sat idle may have died silently (a NAT forgot it):
      // check before giving it a call, as gRPC clients do.
      if (!current.needsCheck || (await current.checkLiveness())) return current;
      if (this.#current && this.#current !== current && !this.#current.unusable) return this.#current;
    }
    if (this.#closeController.signal.aborted) {
      throw new TransportError("CANCELED", this.#options.address, `the connection to ${this.#options.address} was closed`);
    }
    this.#connecting ??= this.#open().finally(() => (this.#connecting = undefined));
    if (!signal) return this.#connecting;
    // The caller may give up; the connection attempt goes on for the others.
    return raceAbort(this.#connecting, signal, () => abortError(signal, this.#options.address));
  }

  async #open(): Promise<Connection> {
    const { address, connectTimeoutMs } = this.#options;
    const signal = AbortSignal.any([this.#closeController.signal, AbortSignal.timeout(Math.ceil(connectTimeoutMs))]);
    const socket = await this.#options.dial(signal);
    const connection = new Connection(socket, this.authority, {
      address,
      keepalive: { intervalMs: this.#intervalMs, timeoutMs: this.#options.keepalive.timeoutMs },
      idleTimeoutMs: this.#options.idleTimeoutMs,
      onLoss: (lost, error, hadStreams) => this.#onLoss(lost, error, hadStreams),
      onClosed: (closed) => this.#forget(closed),
      onTooManyPings: () => {
        // gRPC A8: a client told off for pinging too often doubles its interval.
        this.#intervalMs *= 2;
        log(`${address} asked for fewer pings; keepalive interval now ${this.#intervalMs} ms`);
      },
    });
    this.#all.add(connection);
    try {
      await connection.settled(signal);
    } catch (err) {
      connection.destroy();
      this.#forget(connection);
      const failure = asTransportError(err, address, signal);
      throw this.#options.explainEarlyFailure && failure.code !== "TIMEOUT" && failure.code !== "CANCELED"
        ? await this.#options.explainEarlyFailure(failure, signal)
        : failure;
    }
    if (this.#closeController.signal.aborted) {
      connection.destroy();
      throw new TransportError("CANCELED", address, `the connection to ${address} was closed`);
    }
    this.#current = connection;
    log(`HTTP/2 connection to ${address} ready`);
    return connection;
  }

  #onLoss(connection: Connection, error: TransportError, hadStreams: boolean): void {
    if (hadStreams) this.#lastLoss = { error, at: Date.now() };
    log(`connection to ${this.#options.address} lost: ${error.message}`);
    this.#forget(connection);
  }

  #forget(connection: Connection): void {
    this.#all.delete(connection);
    if (this.#current === connection) this.#current = undefined;
  }
}

/** A request that could not be sent: its connection never came up. */
function unsentCallError(err: unknown): ConnectError {
  const transport = err instanceof TransportError ? err : undefined;
  const code = transport?.code === "TIMEOUT" ? Code.DeadlineExceeded : transport?.code === "CANCELED" ? Code.Canceled : Code.Unavailable;
  const error = new ConnectError(err instanceof Error ? err.message : String(err), code, undefined, undefined, err);
  notSent.add(error);
  return error;
}

function asTransportError(err: unknown, address: string, signal: AbortSignal): TransportError {
  if (err instanceof TransportError) return err;
  if (signal.aborted) return abortError(signal, address);
  const text = err instanceof Error ? err.message : String(err);
  return new TransportError("UNAVAILABLE", address, `cannot connect to ${address}: ${text}`, { cause: err });
}

