// Plays the daemon's side of a build session in unit tests: an HTTP/2 gRPC
// client calling our session server (serveGrpc) over a real loopback socket.
// Used where the real daemon cannot be steered into a case (ordering, errors);
// the end-to-end tests use the real BuildKit.
import * as http2 from "node:http2";
import * as net from "node:net";
import { type Routes, serveGrpc } from "../../src/session/grpc-server.js";

export interface DaemonCall {
  /** Sends one message (raw protobuf bytes). */
  send(message: Uint8Array): void;
  /** Writes bytes as they are on the call's stream (a hand-made gRPC prefix, say). */
  sendRaw(bytes: Uint8Array): void;
  /** Half-closes our side. */
  end(): void;
  /**
   * Cancels the call. Node's client sends END_STREAM before the RST_STREAM,
   * so the server may see the messages end first; use dropConnection() for
   * a daemon that goes away mid-transfer.
   */
  cancel(): void;
  /** Messages from the server, until it ends the call. */
  messages: AsyncIterable<Uint8Array>;
  /** The final status, once trailers arrive. */
  status: Promise<{ code: number; message: string }>;
}

export interface DaemonSide {
  /** Starts a call; metadata values that are arrays go out as separate header fields. */
  call(method: string, metadata?: Record<string, string | string[]>): DaemonCall;
  /** Cuts the connection under every call in flight, as a dying daemon would. */
  dropConnection(): void;
  close(): Promise<void>;
}

export async function startDaemonSide(routes: Routes): Promise<DaemonSide> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
  const served = serveGrpc(await accepted, routes);
  // Room for a message of BuildKit's largest size in one write (Node's default is 10 MiB).
  const client = http2.connect("http://localhost", { createConnection: () => socket, maxSessionMemory: 64 });

  return {
    call(method, metadata = {}) {
      const stream = client.request({
        ":method": "POST",
        ":path": method,
        "content-type": "application/grpc",
        te: "trailers",
        ...metadata,
      });
      const status = new Promise<{ code: number; message: string }>((resolve, reject) => {
        stream.on("trailers", (trailers) =>
          resolve({ code: Number(trailers["grpc-status"]), message: decodeURIComponent(String(trailers["grpc-message"] ?? "")) }),
        );
        stream.on("close", () => reject(new Error(`${method}: closed without trailers`)));
      });
      status.catch(() => {});
      return {
        send(message) {
          const prefix = Buffer.alloc(5);
          prefix.writeUInt32BE(message.length, 1);
          stream.write(Buffer.concat([prefix, message]));
        },
        sendRaw: (bytes) => stream.write(bytes),
        end: () => stream.end(),
        cancel: () => stream.close(http2.constants.NGHTTP2_CANCEL),
        messages: framed(stream),
        status,
      };
    },
    dropConnection() {
      socket.destroy();
    },
    async close() {
      client.close();
      served.close();
      socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function* framed(stream: http2.ClientHttp2Stream): AsyncGenerator<Uint8Array> {
  let buffer: Buffer = Buffer.alloc(0);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 5 && buffer.length >= 5 + buffer.readUInt32BE(1)) {
      const length = buffer.readUInt32BE(1);
      yield buffer.subarray(5, 5 + length);
      buffer = buffer.subarray(5 + length);
    }
  }
}
