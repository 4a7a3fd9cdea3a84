import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { createLogger } from "../log.js";
import type { Attachable } from "./attachable.js";
import { type Handler, serveGrpc } from "./grpc-server.js";
import { healthAttachable } from "./health.js";

const log = createLogger("session");

export interface SessionOptions {
  /** Shown by older daemons; informational. */
  name?: string;
  /**
   * Part of the daemon's key for reusing the last upload of a local dir:
   * keep it stable for one directory on one machine, so a rebuild sends only
   * what changed.
   */
  sharedKey: string;
  attachables: Attachable[];
}

/**
 * A build session: the gRPC services the client serves to the daemon
 * (health always, plus the attachables), and the headers that announce them.
 */
export class BuildSession {
  /** Goes in SolveRequest.session. */
  readonly id: string;
  readonly #options: SessionOptions;
  readonly #routes: Map<string, Handler>;

  constructor(options: SessionOptions) {
    // The daemon splits "prefix:id" on lookups, so no ':' in ids.
    this.id = randomBytes(16).toString("hex");
    this.#options = options;
    this.#routes = new Map();
    for (const attachable of [healthAttachable(), ...options.attachables]) {
      for (const [method, handler] of attachable.routes) {
        if (this.#routes.has(method)) throw new Error(`two session attachables serve ${method}`);
        this.#routes.set(method, handler);
      }
    }
  }

  /**
   * The `X-Docker-Expose-Session-*` headers. Every method goes in its own
   * header field: the daemon matches them one by one before it calls
   * FileSync or FileSend.
   */
  get headers(): Record<string, string | string[]> {
    return {
      "x-docker-expose-session-uuid": this.id,
      "x-docker-expose-session-name": this.#options.name ?? "buildkit-node",
      "x-docker-expose-session-sharedkey": this.#options.sharedKey,
      "x-docker-expose-session-grpc-method": [...this.#routes.keys()],
    };
  }

  /** Serves the session over `connection` (the daemon dials in, speaking HTTP/2). */
  serve(connection: Duplex): { close(): void } {
    log(`session ${this.id}: serving ${this.#routes.size} methods`);
    return serveGrpc(connection, this.#routes);
  }
}
