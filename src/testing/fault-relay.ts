import * as net from "node:net";
import type { Duplex } from "node:stream";
import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import { parseAddress } from "../transport/address.js";
import { dial } from "../transport/dial.js";
import { listenOnLoopback } from "./loopback-server.js";

const log = createLogger("fault-relay");

/** How often a slowed relay hands out its byte allowance. */
const SLOW_TICK_MS = 50;
/** What a stalled direction holds before it stops reading. */
const STALL_BUFFER_BYTES = 4 * 1024 * 1024;

export interface FaultRelayOptions {
  /**
   * What to relay to: a BuildKit address (`docker://…` is upgraded on
   * `POST /grpc` as a client would, `unix://…`, `tcp://host:port`) or an
   * HTTP origin such as a local Depot's `apiUrl` (`http://127.0.0.1:PORT`).
   * Bytes pass as they are: TLS between a client and a `tcp://` daemon stays
   * end to end (give the client the daemon's `serverName`).
   */
  target: string;
}

/** What the relay does to the bytes of its connections. */
export type FaultMode =
  /** Passes everything. */
  | "pass"
  /**
   * Passes nothing either way and keeps every connection open: a peer that
   * vanished without a word. What arrives meanwhile is held (up to 4 MiB a
   * direction, as a network would buffer), and flows on after `heal()`.
   */
  | "stall"
  /** Passes at most `bytesPerSecond` each way. */
  | "slow"
  /** Resets every new connection as it arrives (open ones carry on): nothing listening, or no backend behind a balancer. */
  | "refuse";

export interface FaultRelay extends AsyncDisposable {
  /** Where a BuildKit client connects: `tcp://127.0.0.1:PORT`. */
  readonly address: string;
  /** The same port as an HTTP origin: `http://127.0.0.1:PORT` (for a Depot API target). */
  readonly url: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections open now. */
  readonly active: number;
  /** Bytes received from clients so far (passed on or held). */
  readonly bytesFromClients: number;
  readonly mode: FaultMode;
  /** Closes every open connection at once, both ways (FIN): a daemon that went away. */
  cut(): void;
  /** Resets every open connection (TCP RST to the client): a crash or a middlebox dropping it. */
  reset(): void;
  /** From now on, passes nothing and holds every connection open, new ones included. */
  stall(): void;
  /** From now on, passes at most `bytesPerSecond` in each direction of each connection. */
  slow(bytesPerSecond: number): void;
  /** From now on, resets every new connection at once. */
  refuse(): void;
  /** Back to passing everything; bytes held meanwhile flow on. */
  heal(): void;
  /** Closes the listener and every connection. Idempotent. */
  stop(): Promise<void>;
}

/**
 * A TCP relay in front of a daemon or an API that a test controls, to see
 * what a client does when the network misbehaves: cut, reset, stall (the
 * peer goes silent without closing anything) or slow down. Listens on
 * 127.0.0.1, a free port.
 */
export async function startFaultRelay(options: FaultRelayOptions): Promise<FaultRelay> {
  const connectUpstream = upstreamOf(options.target);
  const pipes = new Set<RelayedConnection>();
  let accepted = 0;
  let fromClients = 0;
  let mode: FaultMode = "pass";
  let rate = 0;

  const server = net.createServer((client) => {
    accepted++;
    if (mode === "refuse") {
      client.on("error", () => {});
      client.resetAndDestroy();
      return;
    }
    client.on("data", (chunk: Buffer) => (fromClients += chunk.length));
    const pipe = new RelayedConnection(client, connectUpstream(), () => ({ mode, rate }));
    pipes.add(pipe);
    pipe.closed.then(() => pipes.delete(pipe));
  });
  server.on("error", (err) => log(`listener: ${err.message}`));
  const port = await listenOnLoopback(server, 0, "a fault relay");
  log(`relay on 127.0.0.1:${port} for ${options.target}`);

  const setMode = (next: FaultMode, bytesPerSecond = 0) => {
    mode = next;
    rate = bytesPerSecond;
    for (const pipe of pipes) pipe.modeChanged();
  };
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= new Promise<void>((resolve) => {
      for (const pipe of pipes) pipe.close(false);
      server.close(() => resolve());
    }));

  return {
    address: `tcp://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    get connections() {
      return accepted;
    },
    get active() {
      return pipes.size;
    },
    get bytesFromClients() {
      return fromClients;
    },
    get mode() {
      return mode;
    },
    cut: () => pipes.forEach((pipe) => pipe.close(false)),
    reset: () => pipes.forEach((pipe) => pipe.close(true)),
    stall: () => setMode("stall"),
    slow(bytesPerSecond: number) {
      if (!(bytesPerSecond > 0)) throw new BuildKitNodeError("INVALID_ARGUMENT", "slow(): bytesPerSecond must be a positive number");
      setMode("slow", bytesPerSecond);
    },
    refuse: () => setMode("refuse"),
    heal: () => setMode("pass"),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** Opens the far side of one relayed connection. */
function upstreamOf(target: string): () => Promise<Duplex> {
  const http = /^http:\/\/([^/:]+|\[[^\]]+\]):(\d+)\/?$/.exec(target);
  if (http) {
    const host = http[1]!.replace(/^\[(.*)\]$/, "$1");
    return () => connected(net.connect({ host, port: Number(http[2]) }));
  }
  const endpoint = parseAddress(target);
  switch (endpoint.kind) {
    case "docker":
      // dockerd's BuildKit is only reachable through the Engine's upgrade.
      return () => dial(endpoint, target, undefined, AbortSignal.timeout(30_000));
    case "unix":
      return () => connected(net.connect({ path: endpoint.path }));
    case "tcp":
      return () => connected(net.connect({ host: endpoint.host, port: endpoint.port }));
  }
}

function connected(socket: net.Socket): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/** One client connection and its upstream, with the bytes between them under control. */
class RelayedConnection {
  readonly closed: Promise<void>;
  readonly #client: net.Socket;
  #upstream: Duplex | undefined;
  readonly #settings: () => { mode: FaultMode; rate: number };
  readonly #directions: Direction[] = [];
  #onClosed!: () => void;
  #done = false;

  constructor(client: net.Socket, upstream: Promise<Duplex>, settings: () => { mode: FaultMode; rate: number }) {
    this.#client = client;
    this.#settings = settings;
    this.closed = new Promise((resolve) => (this.#onClosed = resolve));
    client.on("error", (err) => log(`client: ${err.message}`));
    client.on("close", () => this.close(false));
    client.pause();
    upstream.then(
      (socket) => {
        if (this.#done) return void socket.destroy();
        this.#upstream = socket;
        socket.on("error", (err) => log(`upstream: ${err.message}`));
        socket.on("close", () => this.close(false));
        this.#directions.push(new Direction(client, socket), new Direction(socket, client));
        this.modeChanged();
      },
      (err: Error) => {
        log(`cannot reach the target: ${err.message}`);
        this.close(false);
      },
    );
  }

  modeChanged(): void {
    for (const direction of this.#directions) direction.apply(this.#settings());
  }

  /** Ends both sides: a reset (RST) or a close (FIN). */
  close(reset: boolean): void {
    if (this.#done) return;
    this.#done = true;
    for (const direction of this.#directions) direction.stop();
    if (reset && typeof this.#client.resetAndDestroy === "function" && !this.#client.destroyed) this.#client.resetAndDestroy();
    else this.#client.destroy();
    const upstream = this.#upstream;
    if (upstream instanceof net.Socket && reset && !upstream.destroyed && upstream.remoteAddress) upstream.resetAndDestroy();
    else upstream?.destroy();
    this.#onClosed();
  }
}

/** Bytes from one socket to the other: all of them, none, or so many per second. */
class Direction {
  #mode: FaultMode = "pass";
  #allowance = 0;
  #held: Buffer[] = [];
  /** The source ended: end the destination once what is held has passed. */
  #endAfterHeld = false;
  #ticker: NodeJS.Timeout | undefined;

  constructor(
    private readonly from: Duplex,
    private readonly to: Duplex,
  ) {
    from.on("data", (chunk: Buffer) => {
      this.#held.push(chunk);
      this.#flush();
    });
    from.on("end", () => {
      this.#endAfterHeld = true;
      this.#flush();
    });
    to.on("drain", () => this.#flush());
  }

  apply({ mode, rate }: { mode: FaultMode; rate: number }): void {
    this.#mode = mode;
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    if (mode === "slow") {
      this.#allowance = 0;
      this.#ticker = setInterval(() => {
        this.#allowance = Math.min(rate, this.#allowance + (rate * SLOW_TICK_MS) / 1000);
        this.#flush();
      }, SLOW_TICK_MS);
    }
    this.#flush();
  }

  stop(): void {
    clearInterval(this.#ticker);
    this.#ticker = undefined;
    this.#held = [];
  }

  /** Passes on what the mode allows; reads more only when nothing is held. */
  #flush(): void {
    if (this.#mode === "stall") {
      if (this.#held.reduce((n, c) => n + c.length, 0) >= STALL_BUFFER_BYTES) this.from.pause();
      else this.from.resume();
      return;
    }
    while (this.#held.length > 0) {
      let chunk = this.#held[0]!;
      if (this.#mode === "slow") {
        const allowed = Math.floor(this.#allowance);
        if (allowed <= 0) break;
        if (chunk.length > allowed) {
          this.#held[0] = chunk.subarray(allowed);
          chunk = chunk.subarray(0, allowed);
        } else {
          this.#held.shift();
        }
        this.#allowance -= chunk.length;
      } else {
        this.#held.shift();
      }
      if (!this.to.write(chunk)) {
        this.from.pause();
        return;
      }
    }
    if (this.#held.length > 0) {
      this.from.pause();
      return;
    }
    if (this.#endAfterHeld) {
      if (!this.to.writableEnded) this.to.end();
      return;
    }
    this.from.resume();
  }
}
