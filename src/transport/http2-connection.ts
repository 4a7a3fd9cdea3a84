import { Code, ConnectError } from "@connectrpc/connect";
import * as http2 from "node:http2";
import type { Duplex } from "node:stream";
import { TransportError } from "../errors.js";
import { createLogger } from "../log.js";
import { abortError, isTlsError } from "./dial.js";
import { raceAbort } from "./race-abort.js";

const log = createLogger("transport");

/**
 * HTTP/2 PING keepalive, as gRPC clients do it (gRPC proposal A8): while
 * calls are open, a connection that has carried nothing from the server for
 * `intervalMs` is pinged, and one that does not answer within `timeoutMs` is
 * declared dead, failing its calls with UNAVAILABLE.
 */
export interface KeepaliveOptions {
  /** Quiet time (no frame from the server) before a ping. Default 30 s. */
  intervalMs?: number;
  /** How long a ping may go unanswered. Default 20 s. */
  timeoutMs?: number;
}

export const DEFAULT_KEEPALIVE_INTERVAL_MS = 30_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 20_000;

/**
 * gRPC servers (grpc-go's default enforcement policy, which buildkitd and
 * dockerd use) count a PING as a strike when it comes less than 5 minutes
 * after the previous one unless the server sent headers or data since, and
 * close the connection (GOAWAY `too_many_pings`) at the third strike. So at
 * most two PINGs go out after the server's last data; the next liveness
 * check is a gRPC health check instead, whose answer (SERVING, or
 * UNIMPLEMENTED from a server without that service) proves the server alive
 * and, being headers, clears the strikes.
 */
const PINGS_BETWEEN_SERVER_DATA = 2;
/**
 * Node's HTTP/2 gives a session 10 MB for frames not yet sent, and past it
 * resets every other stream with ENHANCE_YOUR_CALM: one large request (a
 * Solve with 12 MB of build args; gRPC allows 16 MiB) would kill the build's
 * own session and status streams. Room for the largest message and then some.
 */
const MAX_SESSION_MEMORY_MB = 64;
const HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check";
/** A gRPC message frame holding an empty HealthCheckRequest. */
const EMPTY_GRPC_MESSAGE = new Uint8Array(5);

export interface ConnectionHooks {
  address: string;
  keepalive: Required<KeepaliveOptions>;
  idleTimeoutMs: number;
  onLoss(connection: Connection, error: TransportError, hadStreams: boolean): void;
  onClosed(connection: Connection): void;
  onTooManyPings(): void;
}

/** One HTTP/2 session over one dialed byte stream. */
export class Connection {
  readonly #socket: Duplex;
  readonly #session: http2.ClientHttp2Session;
  readonly #hooks: ConnectionHooks;
  readonly #streams = new Set<http2.ClientHttp2Stream>();
  readonly #settings: Promise<void>;
  /** The last frame from the server of any kind (data, headers, a PING answer). */
  #lastAliveAt = Date.now();
  /** PINGs sent since the server last sent data or headers (see PINGS_BETWEEN_SERVER_DATA). */
  #pingsSinceData = 0;
  #timer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #checking: Promise<boolean> | undefined;
  /** Set once: why this connection ended, when it ended badly. */
  #lost: TransportError | undefined;
  /** We are closing it (idle, drained after GOAWAY, or the channel closed). */
  #closing = false;
  /** A GOAWAY arrived: open streams finish, new ones go elsewhere. */
  #draining = false;

  constructor(socket: Duplex, origin: string, hooks: ConnectionHooks) {
    this.#socket = socket;
    this.#hooks = hooks;
    // These run before HTTP/2's own socket listeners (added below), so open
    // calls fail with the reason rather than HTTP/2's CANCEL.
    socket.on("error", (err: Error) => this.#lose(brokenConnection(err, hooks.address)));
    socket.on("close", () => this.#lose(new TransportError("UNAVAILABLE", hooks.address, `the connection to ${hooks.address} was closed by the other side`)));

    this.#session = http2.connect(origin, { createConnection: () => socket as never, maxSessionMemory: MAX_SESSION_MEMORY_MB });
    const session = this.#session;
    session.on("error", (err: Error) => this.#lose(new TransportError("UNAVAILABLE", hooks.address, `the HTTP/2 connection to ${hooks.address} failed: ${err.message}`, { cause: err })));
    session.on("close", () => {
      this.#stopTimers();
      if (!this.#closing) this.#lose(new TransportError("UNAVAILABLE", hooks.address, `the HTTP/2 connection to ${hooks.address} closed`));
      hooks.onClosed(this);
    });
    session.on("goaway", (code: number, _lastStreamId: number, data?: Buffer) => this.#onGoaway(code, data));
    session.on("frameError", (type: number, code: number) => log(`${hooks.address}: could not send a frame of type ${type} (error ${code})`));
    session.on("remoteSettings", () => this.frameReceived(false));
    this.#settings = new Promise<void>((resolve, reject) => {
      session.once("remoteSettings", () => resolve());
      session.once("close", () => reject(this.#lost ?? new TransportError("UNAVAILABLE", hooks.address, `${hooks.address} closed the connection before speaking HTTP/2`)));
    });
    this.#settings.then(
      () => {
        // Someone awaits the connection until now; from here on only calls keep the process alive.
        if (this.#streams.size === 0) session.unref();
      },
      () => {}, // observed through settled()
    );
    this.#armIdle();
  }

  /** Whether `stream` is one of this connection's. */
  carries(stream: http2.ClientHttp2Stream): boolean {
    return stream.session === this.#session;
  }

  /** True once no new stream may start on it. */
  get unusable(): boolean {
    return this.#lost !== undefined || this.#closing || this.#draining || this.#session.destroyed || this.#session.closed;
  }

  /** Resolves on the server's first SETTINGS frame; rejects if the connection fails first or `signal` aborts. */
  settled(signal: AbortSignal): Promise<void> {
    return raceAbort(this.#settings, signal, () => abortError(signal, this.#hooks.address));
  }

  open(headers: http2.OutgoingHttpHeaders, options: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream {
    if (this.unusable) throw new TransportError("UNAVAILABLE", this.#hooks.address, `the connection to ${this.#hooks.address} is closing`);
    const stream = this.#session.request(headers, options);
    // Whoever reads the stream adds its own listener; this one only keeps a
    // late error (after that reader is gone) from becoming an uncaught one.
    stream.on("error", () => {});
    this.#streams.add(stream);
    if (this.#streams.size === 1) {
      this.#session.ref();
      this.#armKeepalive();
    }
    stream.once("response", () => this.frameReceived(true));
    stream.once("close", () => {
      this.#streams.delete(stream);
      if (this.#streams.size > 0) return;
      this.#session.unref();
      if (this.#draining) this.#close();
      else this.#armIdle();
    });
    return stream;
  }

  /** A frame came from the server: `data` for DATA/HEADERS (which also clear the server's ping strikes). */
  frameReceived(data: boolean): void {
    this.#lastAliveAt = Date.now();
    if (data) this.#pingsSinceData = 0;
  }

  /** Ends the connection at our request; open streams fail with `reason` (a CANCELED error), if given. */
  destroy(reason?: TransportError): void {
    if (this.#lost || this.#closing) return;
    this.#closing = true;
    this.#teardown(reason && wrapForConnect(reason, Code.Canceled));
  }

  /** The connection is gone: fail its streams with why, then tear it down. */
  #lose(error: TransportError): void {
    if (this.#lost || this.#closing) return;
    this.#lost = error;
    const hadStreams = this.#streams.size > 0;
    this.#teardown(wrapForConnect(error, Code.Unavailable));
    this.#hooks.onLoss(this, error, hadStreams);
  }

  #teardown(streamError: Error | undefined): void {
    this.#stopTimers();
    for (const stream of this.#streams) if (!stream.destroyed) stream.destroy(streamError);
    this.#session.destroy();
    this.#socket.destroy();
  }

  #onGoaway(code: number, data: Buffer | undefined): void {
    this.#draining = true;
    if (code === http2.constants.NGHTTP2_NO_ERROR) {
      // A graceful goodbye (the daemon is shutting down or recycling the
      // connection): open calls may finish; new ones dial again.
      if (this.#streams.size === 0) this.#close();
      return;
    }
    const tooManyPings = code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM && data?.toString("latin1") === "too_many_pings";
    if (tooManyPings) this.#hooks.onTooManyPings();
    const why = tooManyPings ? "it found our keepalive pings too frequent" : `HTTP/2 error code ${code}`;
    this.#lose(new TransportError("UNAVAILABLE", this.#hooks.address, `${this.#hooks.address} ended the connection (GOAWAY: ${why})`));
  }

  /** A graceful close: nothing in flight, nothing lost. */
  #close(): void {
    if (this.#closing || this.#lost) return;
    this.#closing = true;
    this.#stopTimers();
    this.#session.close(() => this.#socket.destroy());
  }

  #armIdle(): void {
    this.#setTimer(this.#hooks.idleTimeoutMs, () => {
      if (this.#streams.size === 0) this.#close();
    });
  }

  #armKeepalive(): void {
    if (this.#streams.size === 0 || this.unusable) return;
    const due = this.#lastAliveAt + this.#hooks.keepalive.intervalMs;
    this.#setTimer(Math.max(0, due - Date.now()), () => {
      if (this.#streams.size === 0 || this.unusable) return;
      // Frames that arrived meanwhile moved the deadline: just wait longer.
      if (Date.now() < this.#lastAliveAt + this.#hooks.keepalive.intervalMs) return this.#armKeepalive();
      this.checkLiveness().then((alive) => {
        if (alive) this.#armKeepalive();
      });
    });
  }

  /** Whether a connection idle for longer than the keepalive interval should be checked before it takes a call. */
  get needsCheck(): boolean {
    return this.#streams.size === 0 && Date.now() - this.#lastAliveAt > this.#hooks.keepalive.intervalMs;
  }

  /**
   * Asks the server for a sign of life (a PING, or a health check when the
   * server's ping policy calls for one) and waits `timeoutMs` at most; a
   * server that stays silent loses the connection with UNAVAILABLE.
   * Concurrent callers share one check.
   */
  checkLiveness(): Promise<boolean> {
    this.#checking ??= new Promise<boolean>((resolve) => {
      const { address, keepalive } = this.#hooks;
      const byPing = this.#pingsSinceData < PINGS_BETWEEN_SERVER_DATA;
      log(`${address}: ${byPing ? "ping" : "health check"} after ${Date.now() - this.#lastAliveAt} ms without a frame`);
      // A caller may be waiting on this check (an idle connection about to take a call).
      this.#session.ref();
      let settled = false;
      const settle = (alive: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(this.#pingTimer);
        this.#checking = undefined;
        if (this.#streams.size === 0 && !this.#session.destroyed) this.#session.unref();
        if (alive) this.frameReceived(!byPing);
        resolve(alive && !this.unusable);
      };
      this.#pingTimer = setTimeout(() => {
        this.#lose(new TransportError("UNAVAILABLE", address, `${address} did not answer a keepalive ping within ${keepalive.timeoutMs} ms; the connection is dead`));
        settle(false);
      }, keepalive.timeoutMs).unref();
      try {
        if (byPing) {
          this.#pingsSinceData++;
          // A false return means pings are already in flight: the timer decides.
          this.#session.ping((err) => settle(err === null));
        } else {
          this.#healthCheck(settle);
        }
      } catch {
        settle(false); // the session is gone; its own events say why
      }
    });
    return this.#checking;
  }

  /** Any answer counts, UNIMPLEMENTED included: the server is alive. */
  #healthCheck(settle: (alive: boolean) => void): void {
    const stream = this.#session.request({ ":method": "POST", ":path": HEALTH_CHECK_PATH, "content-type": "application/grpc", te: "trailers" });
    stream.on("error", () => settle(false));
    stream.once("response", () => settle(true));
    stream.resume(); // the answer's body and trailers are not needed
    stream.end(EMPTY_GRPC_MESSAGE);
  }

  #setTimer(ms: number, run: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(run, Math.min(ms, 0x7fffffff)).unref();
  }

  #stopTimers(): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#pingTimer);
  }
}

/** A socket error on a connection in use; TLS alerts (a refused client certificate, say) keep the TLS code. */
function brokenConnection(err: NodeJS.ErrnoException, address: string): TransportError {
  if (isTlsError(err)) return new TransportError("TLS", address, `TLS with ${address} failed: ${err.message}`, { cause: err });
  return new TransportError("UNAVAILABLE", address, `the connection to ${address} broke: ${err.message}`, { cause: err });
}

/**
 * The error a stream is failed with: connect-es passes a ConnectError on
 * as it is, so the call gets this code, with the TransportError as cause.
 */
function wrapForConnect(error: TransportError, code: Code): ConnectError {
  return new ConnectError(error.message, code, undefined, undefined, error);
}
