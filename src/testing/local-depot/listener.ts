// One port on 127.0.0.1 for HTTP/1.1 and h2c alike. Connect clients over
// `http://` use either (connect-go's default client HTTP/1.1, Depot's Node SDK
// h2c with prior knowledge), gRPC needs h2c, and Node's
// `http2.createServer({ allowHTTP1: true })` serves HTTP/1.1 only over TLS.
// So each connection is sorted by its first bytes.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { Logger } from "../../log.js";
import { listenOnLoopback, openConnections } from "../loopback-server.js";
import { replaying } from "../replaying-socket.js";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface Listener {
  readonly port: number;
  /** Stops accepting and destroys every open connection. Idempotent. */
  close(): Promise<void>;
}

export type RequestHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export async function listen(handler: RequestHandler, port: number, log: Logger): Promise<Listener> {
  // Neither server listens itself: connections are handed to them.
  const http1 = http.createServer(handler);
  const h2c = http2.createServer(handler);
  h2c.on("sessionError", (err) => log(`h2c session: ${err.message}`));
  const server = net.createServer((socket) => {
    sniff(socket, (isH2, head) => {
      if (isH2) {
        h2c.emit("connection", replaying(socket, head));
      } else {
        // http's parser reads a net.Socket's JS buffer first, so the bytes can go back in.
        socket.unshift(head);
        http1.emit("connection", socket);
        socket.resume();
      }
    });
  });
  const connections = openConnections(server, log);
  return { port: await listenOnLoopback(server, port, "the local Depot API"), close: connections.close };
}

/** Reads until the bytes either are the HTTP/2 preface or cannot be, then pauses the socket. */
function sniff(socket: net.Socket, decide: (isH2: boolean, head: Buffer) => void): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    const n = Math.min(head.length, H2_PREFACE.length);
    const matches = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (matches && head.length < H2_PREFACE.length) return;
    socket.off("data", onData);
    socket.pause();
    decide(matches, head);
  };
  socket.on("data", onData);
}
