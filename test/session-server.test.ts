// The session's gRPC server, driven by an HTTP/2 client playing the daemon
// (Node's, over loopback), and at the end by a raw socket writing frames.
import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import * as net from "node:net";
import { Duplex, Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { ChunkQueue } from "../src/session/chunk-queue.js";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../src/gen/grpc/health/v1/health_pb.js";
import {
  GrpcCode,
  GrpcStatusError,
  MAX_RECEIVE_MESSAGE_BYTES,
  metadataValue,
  parseGrpcTimeout,
  type Routes,
  type ServerCall,
  serveGrpc,
  unary,
} from "../src/session/grpc-server.js";
import { type DaemonSide, startDaemonSide } from "./support/daemon-side.js";

let daemon: DaemonSide | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

async function collect(iterable: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const m of iterable) out.push(m);
  return out;
}

describe("serveGrpc", () => {
  it("answers a unary call and keeps repeated metadata fields apart", async () => {
    let seen: readonly string[] | undefined;
    const routes = new Map([
      [
        "/grpc.health.v1.Health/Check",
        unary(HealthCheckRequestSchema, HealthCheckResponseSchema, async (_req, call) => {
          seen = call.metadata.get("exclude-patterns");
          return create(HealthCheckResponseSchema, { status: 1 });
        }),
      ],
    ]);
    daemon = await startDaemonSide(routes);
    const call = daemon.call("/grpc.health.v1.Health/Check", { "exclude-patterns": ["a, b", "c"] });
    call.send(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema)));
    call.end();
    const [reply] = await collect(call.messages);
    expect(fromBinary(HealthCheckResponseSchema, reply!).status).toBe(1);
    expect(await call.status).toEqual({ code: 0, message: "" });
    expect(seen).toEqual(["a, b", "c"]);
  });

  it("answers an unknown method UNIMPLEMENTED", async () => {
    daemon = await startDaemonSide(new Map());
    const call = daemon.call("/nope.Service/Method");
    call.end();
    expect((await call.status).code).toBe(GrpcCode.UNIMPLEMENTED);
  });

  it("ends a call with the status a handler throws, message intact", async () => {
    daemon = await startDaemonSide(
      new Map([["/x.Y/Z", async () => { throw new GrpcStatusError(GrpcCode.NOT_FOUND, "no secret “npmrc”, 100%"); }]]),
    );
    const call = daemon.call("/x.Y/Z");
    call.end();
    expect(await call.status).toEqual({ code: GrpcCode.NOT_FOUND, message: "no secret “npmrc”, 100%" });
  });

  it("streams both ways and aborts the handler's signal when the daemon cancels", async () => {
    let aborted: Promise<void> | undefined;
    const handler = async (call: ServerCall) => {
      aborted = new Promise((resolve) => call.signal.addEventListener("abort", () => resolve()));
      expect(metadataValue(call, "dir-name")).toBe("context");
      for await (const message of call.messages()) await call.send(message); // echo
    };
    daemon = await startDaemonSide(new Map([["/x.Y/Echo", handler]]));
    const call = daemon.call("/x.Y/Echo", { "dir-name": "context" });
    const big = new Uint8Array(1024 * 1024).fill(7);
    call.send(new Uint8Array([1, 2, 3]));
    call.send(big);
    const iterator = call.messages[Symbol.asyncIterator]();
    expect([...((await iterator.next()).value as Uint8Array)]).toEqual([1, 2, 3]);
    expect(((await iterator.next()).value as Uint8Array).length).toBe(big.length);
    call.cancel();
    await aborted;
  });

  /** A handler that records what it received and how its call ended. */
  function recorder() {
    const seen: { messages: Uint8Array[]; error?: unknown; aborted?: unknown } = { messages: [] };
    const handler = async (call: ServerCall) => {
      call.signal.addEventListener("abort", () => (seen.aborted = call.signal.reason));
      try {
        for await (const message of call.messages()) seen.messages.push(message);
      } catch (err) {
        seen.error = err;
        throw err;
      }
    };
    return { seen, handler };
  }

  it("refuses a message over 16 MiB by its length prefix, RESOURCE_EXHAUSTED, without waiting for its bytes", async () => {
    const { seen, handler } = recorder();
    daemon = await startDaemonSide(new Map([["/x.Y/Upload", handler]]));
    const call = daemon.call("/x.Y/Upload");
    call.send(new Uint8Array([1, 2, 3]));
    // A 4 GiB - 1 length, as a hostile or broken peer might claim; only a few bytes follow.
    call.sendRaw(Buffer.from([0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    const status = await call.status;
    expect(status.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(status.message).toContain(`larger than max (4294967295 vs. ${MAX_RECEIVE_MESSAGE_BYTES})`);
    expect(seen.messages.map((m) => [...m])).toEqual([[1, 2, 3]]);
  });

  it("takes a message of exactly 16 MiB", async () => {
    const { seen, handler } = recorder();
    daemon = await startDaemonSide(new Map([["/x.Y/Upload", handler]]));
    const call = daemon.call("/x.Y/Upload");
    call.send(new Uint8Array(MAX_RECEIVE_MESSAGE_BYTES).fill(9));
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(seen.messages.map((m) => m.length)).toEqual([MAX_RECEIVE_MESSAGE_BYTES]);
  });

  it("decompresses gzip messages, and refuses one that inflates past the limit", async () => {
    const { seen, handler } = recorder();
    daemon = await startDaemonSide(new Map([["/x.Y/Upload", handler]]));
    const framed = (payload: Uint8Array) => {
      const body = gzipSync(payload);
      const prefix = Buffer.alloc(5);
      prefix[0] = 1;
      prefix.writeUInt32BE(body.length, 1);
      return Buffer.concat([prefix, body]);
    };
    const call = daemon.call("/x.Y/Upload", { "grpc-encoding": "gzip" });
    call.sendRaw(framed(Buffer.from("hello, gzip")));
    call.send(Buffer.from("plain"));
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(seen.messages.map((m) => Buffer.from(m).toString())).toEqual(["hello, gzip", "plain"]);

    // 32 MiB of zeros is ~32 KiB compressed: under the limit on the wire, not once inflated.
    const bomb = recorder();
    await daemon.close();
    daemon = await startDaemonSide(new Map([["/x.Y/Upload", bomb.handler]]));
    const bombCall = daemon.call("/x.Y/Upload", { "grpc-encoding": "gzip" });
    bombCall.sendRaw(framed(Buffer.alloc(2 * MAX_RECEIVE_MESSAGE_BYTES)));
    bombCall.end();
    const status = await bombCall.status;
    expect(status.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(bomb.seen.messages).toEqual([]);
  });

  it("refuses a compressed message on a call that declared no encoding", async () => {
    const { handler } = recorder();
    daemon = await startDaemonSide(new Map([["/x.Y/Upload", handler]]));
    const call = daemon.call("/x.Y/Upload");
    const body = gzipSync(Buffer.from("x"));
    const prefix = Buffer.from([1, 0, 0, 0, body.length]);
    call.sendRaw(Buffer.concat([prefix, body]));
    call.end();
    expect((await call.status).code).toBe(GrpcCode.INTERNAL);
  });

  it("ends a call past its grpc-timeout with DEADLINE_EXCEEDED and tells the handler", async () => {
    let aborted: unknown;
    let handlerDone!: () => void;
    const done = new Promise<void>((resolve) => (handlerDone = resolve));
    const handler = async (call: ServerCall) => {
      // Waits for the daemon's messages, which never come.
      try {
        for await (const _ of call.messages()) void _;
      } finally {
        aborted = call.signal.reason;
        handlerDone();
      }
    };
    daemon = await startDaemonSide(new Map([["/x.Y/Slow", handler]]));
    const call = daemon.call("/x.Y/Slow", { "grpc-timeout": "50m" });
    expect(await call.status).toEqual({ code: GrpcCode.DEADLINE_EXCEEDED, message: "/x.Y/Slow: deadline exceeded" });
    call.cancel();
    await done;
    expect(aborted).toBeInstanceOf(GrpcStatusError);
  });

  it("reads grpc-timeout as gRPC defines it", () => {
    expect(parseGrpcTimeout("1H")).toBe(3_600_000);
    expect(parseGrpcTimeout("2M")).toBe(120_000);
    expect(parseGrpcTimeout("3S")).toBe(3000);
    expect(parseGrpcTimeout("250m")).toBe(250);
    expect(parseGrpcTimeout("1500u")).toBe(2);
    expect(parseGrpcTimeout("99999999n")).toBe(100);
    expect(parseGrpcTimeout("99999999H")).toBe(2 ** 31 - 1);
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    for (const bad of ["", "10", "S", "123456789S", "1.5S", "-1S", "10s"]) expect(parseGrpcTimeout(bad)).toBeUndefined();
  });
});

// The session's own HTTP/2 server, at the frame level: a raw socket plays a
// client that does what Node's client never does (padding, CONTINUATION,
// garbage), to check what the real daemons may send is read right.
describe("the session's HTTP/2 server", () => {
  /** A frame: 9-byte header and payload. */
  function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
    const header = Buffer.alloc(9);
    header.writeUIntBE(payload.length, 0, 3);
    header[3] = type;
    header[4] = flags;
    header.writeUInt32BE(streamId, 5);
    return Buffer.concat([header, payload]);
  }
  /** A header block of literals without indexing, no Huffman. */
  function literals(fields: Array<[string, string]>): Buffer {
    const parts: Buffer[] = [];
    for (const [name, value] of fields) parts.push(Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value));
    return Buffer.concat(parts);
  }
  interface Frame {
    type: number;
    flags: number;
    streamId: number;
    payload: Buffer;
  }
  /** Frames the server sends, parsed as they come. */
  async function* framesFrom(socket: AsyncIterable<Buffer>): AsyncGenerator<Frame> {
    let buffer = Buffer.alloc(0);
    for await (const chunk of socket) {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 9 && buffer.length >= 9 + buffer.readUIntBE(0, 3)) {
        const length = buffer.readUIntBE(0, 3);
        yield { type: buffer[3]!, flags: buffer[4]!, streamId: buffer.readUInt32BE(5) & 0x7fffffff, payload: buffer.subarray(9, 9 + length) };
        buffer = buffer.subarray(9 + length);
      }
    }
  }
  const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

  async function rawServer(routes: Routes): Promise<{ socket: net.Socket; close(): void }> {
    const listener = net.createServer();
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
    const socket = net.connect((listener.address() as net.AddressInfo).port, "127.0.0.1");
    const served = serveGrpc(await accepted, routes);
    return {
      socket,
      close() {
        served.close();
        socket.destroy();
        listener.close();
      },
    };
  }

  it("reads padded frames and a header block split into CONTINUATION frames, and answers PING", async () => {
    const seen: { metadata?: ReadonlyMap<string, readonly string[]>; messages: string[] } = { messages: [] };
    const raw = await rawServer(
      new Map([
        [
          "/x.Y/Z",
          async (call: ServerCall) => {
            seen.metadata = call.metadata;
            for await (const m of call.messages()) seen.messages.push(Buffer.from(m).toString());
          },
        ],
      ]),
    );
    try {
      const block = literals([
        [":method", "POST"],
        [":scheme", "http"],
        [":path", "/x.Y/Z"],
        [":authority", "session"],
        ["content-type", "application/grpc"],
        ["dir-name", "context"],
        ["exclude-patterns", "a"],
        ["exclude-patterns", "b"],
      ]);
      const message = Buffer.concat([Buffer.from([0, 0, 0, 0, 5]), Buffer.from("hello")]);
      const padded = (payload: Buffer, pad: number) => Buffer.concat([Buffer.from([pad]), payload, Buffer.alloc(pad)]);
      raw.socket.write(
        Buffer.concat([
          PREFACE,
          frame(4, 0, 0, Buffer.alloc(0)), // SETTINGS
          frame(1, 0x8, 1, padded(block.subarray(0, 20), 3)), // HEADERS, padded, no END_HEADERS
          frame(9, 0, 1, block.subarray(20, 40)), // CONTINUATION
          frame(9, 0x4, 1, block.subarray(40)), // CONTINUATION, END_HEADERS
          frame(0, 0x8, 1, padded(message.subarray(0, 7), 10)), // DATA, padded
          frame(0, 0x1, 1, message.subarray(7)), // DATA, END_STREAM
          frame(6, 0, 0, Buffer.from("12345678")), // PING
        ]),
      );
      let pingAck: Buffer | undefined;
      let status: string | undefined;
      for await (const f of framesFrom(raw.socket)) {
        if (f.type === 6 && f.flags & 0x1) pingAck = f.payload;
        if (f.type === 1 && f.streamId === 1 && f.flags & 0x1) {
          // Trailers: literals without indexing with new names, as our encoder writes them.
          status = f.payload.includes(Buffer.from("grpc-status")) ? f.payload.toString("latin1") : undefined;
          break;
        }
      }
      expect(pingAck?.toString()).toBe("12345678");
      expect(status).toContain("grpc-status");
      expect(seen.messages).toEqual(["hello"]);
      expect(seen.metadata?.get("exclude-patterns")).toEqual(["a", "b"]);
      expect(seen.metadata?.get("dir-name")).toEqual(["context"]);
    } finally {
      raw.close();
    }
  });

  it("answers a peer that does not speak HTTP/2 with GOAWAY and closes, failing no handler", async () => {
    const raw = await rawServer(new Map());
    try {
      raw.socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      const frames = [];
      for await (const f of framesFrom(raw.socket)) frames.push(f);
      const goaway = frames.find((f) => f.type === 7);
      expect(goaway?.payload.readUInt32BE(4)).toBe(1); // PROTOCOL_ERROR
    } finally {
      raw.close();
    }
  });

  it("refuses a frame larger than it allows with GOAWAY FRAME_SIZE_ERROR", async () => {
    const raw = await rawServer(new Map());
    try {
      raw.socket.write(Buffer.concat([PREFACE, frame(0, 0, 1, Buffer.alloc(20_000))]));
      const frames = [];
      for await (const f of framesFrom(raw.socket)) frames.push(f);
      expect(frames.find((f) => f.type === 7)?.payload.readUInt32BE(4)).toBe(6);
    } finally {
      raw.close();
    }
  });

  it("decodes what Node's HPACK encoder sends: Huffman strings and the dynamic table, call after call", async () => {
    const seen: Array<ReadonlyMap<string, readonly string[]>> = [];
    daemon = await startDaemonSide(new Map([["/x.Y/Z", async (call: ServerCall) => void seen.push(call.metadata)]]));
    const metadata = { "dir-name": "context", "include-patterns": ["src/**/*.ts", "package.json"], "x-docker-expose-session-sharedkey": "app:0123456789abcdef" };
    for (let i = 0; i < 3; i++) {
      const call = daemon.call("/x.Y/Z", metadata);
      call.end();
      expect((await call.status).code).toBe(GrpcCode.OK);
    }
    expect(seen).toHaveLength(3);
    for (const m of seen) {
      expect(m.get("include-patterns")).toEqual(["src/**/*.ts", "package.json"]);
      expect(m.get("x-docker-expose-session-sharedkey")).toEqual(["app:0123456789abcdef"]);
      expect(m.get("te")).toEqual(["trailers"]);
    }
  });

  // A peer's faults, each answered with a clean stream or connection error.
  const Type = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
  const requestBlock = (path: string) =>
    literals([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "session"],
      ["content-type", "application/grpc"],
    ]);
  const uint32 = (value: number) => {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(value);
    return bytes;
  };
  const initialWindow = (value: number) => Buffer.concat([Buffer.from([0, 4]), uint32(value)]);
  const ping = (tag: string) => frame(Type.PING, 0, 0, Buffer.from(tag.padEnd(8).slice(0, 8)));
  /** A handler that reads nothing and waits for its call to end. */
  const idle = async (call: ServerCall) => new Promise<void>((resolve) => call.signal.addEventListener("abort", () => resolve()));
  /** Reads frames until `last` matches one (included); all of them if the server closes first. */
  async function framesUntil(frames: AsyncIterator<Frame>, last: (f: Frame) => boolean): Promise<Frame[]> {
    const seen: Frame[] = [];
    for (let next = await frames.next(); !next.done; next = await frames.next()) {
      seen.push(next.value);
      if (last(next.value)) break;
    }
    return seen;
  }
  const isPingAck = (tag: string) => (f: Frame) => f.type === Type.PING && (f.flags & 0x1) !== 0 && f.payload.toString() === tag.padEnd(8).slice(0, 8);
  const goawayCode = (frames: Frame[]) => frames.find((f) => f.type === Type.GOAWAY)?.payload.readUInt32BE(4);
  const dataBytes = (frames: Frame[]) => frames.filter((f) => f.type === Type.DATA).reduce((sum, f) => sum + f.payload.length, 0);

  it("resets a stream whose peer sends past the stream's window (FLOW_CONTROL_ERROR), instead of buffering it", async () => {
    const raw = await rawServer(new Map([["/x.Y/Idle", idle]]));
    try {
      const fullFrame = frame(Type.DATA, 0, 1, Buffer.alloc(16_384));
      raw.socket.write(Buffer.concat([PREFACE, frame(Type.SETTINGS, 0, 0, Buffer.alloc(0)), frame(Type.HEADERS, 0x4, 1, requestBlock("/x.Y/Idle"))]));
      // The 4 MiB the server's SETTINGS allow a stream, then one byte more.
      for (let i = 0; i < 256; i++) raw.socket.write(fullFrame);
      raw.socket.write(Buffer.concat([frame(Type.DATA, 0, 1, Buffer.alloc(1)), ping("after")]));
      const frames = await framesUntil(framesFrom(raw.socket)[Symbol.asyncIterator](), isPingAck("after"));
      const reset = frames.find((f) => f.type === Type.RST_STREAM && f.streamId === 1);
      expect(reset?.payload.readUInt32BE(0)).toBe(3); // FLOW_CONTROL_ERROR
      expect(goawayCode(frames)).toBeUndefined(); // the connection goes on
    } finally {
      raw.close();
    }
  });

  it("ends the connection with GOAWAY FLOW_CONTROL_ERROR when the peer sends past the connection's window", async () => {
    const raw = await rawServer(new Map([["/x.Y/Idle", idle]]));
    try {
      raw.socket.write(Buffer.concat([PREFACE, frame(Type.SETTINGS, 0, 0, Buffer.alloc(0))]));
      // Four streams fill their 4 MiB windows: the 16 MiB the connection allows. A fifth sends one byte.
      for (const id of [1, 3, 5, 7]) {
        raw.socket.write(frame(Type.HEADERS, 0x4, id, requestBlock("/x.Y/Idle")));
        const fullFrame = frame(Type.DATA, 0, id, Buffer.alloc(16_384));
        for (let i = 0; i < 256; i++) raw.socket.write(fullFrame);
      }
      raw.socket.write(Buffer.concat([frame(Type.HEADERS, 0x4, 9, requestBlock("/x.Y/Idle")), frame(Type.DATA, 0, 9, Buffer.alloc(1)), ping("after")]));
      const frames = await framesUntil(framesFrom(raw.socket)[Symbol.asyncIterator](), (f) => f.type === Type.GOAWAY || isPingAck("after")(f));
      expect(goawayCode(frames)).toBe(3); // FLOW_CONTROL_ERROR
    } finally {
      raw.close();
    }
  });

  it("moves an open stream's send window when the peer changes SETTINGS_INITIAL_WINDOW_SIZE mid-stream, below zero too", async () => {
    const reply = new Uint8Array(1000).fill(1); // 1005 bytes of DATA with its prefix
    const raw = await rawServer(new Map([["/x.Y/Reply", async (call: ServerCall) => call.send(reply)]]));
    try {
      const frames = framesFrom(raw.socket)[Symbol.asyncIterator]();
      raw.socket.write(Buffer.concat([PREFACE, frame(Type.SETTINGS, 0, 0, initialWindow(600)), frame(Type.HEADERS, 0x5, 1, requestBlock("/x.Y/Reply"))]));
      let seen = await framesUntil(frames, (f) => f.type === Type.DATA);
      expect(dataBytes(seen)).toBe(600);
      // 600 sent, the initial window now 100: the stream's window is -500; 500 more brings it to 0, still nothing to send.
      raw.socket.write(Buffer.concat([frame(Type.SETTINGS, 0, 0, initialWindow(100)), frame(Type.WINDOW_UPDATE, 0, 1, uint32(500)), ping("stalled")]));
      seen = await framesUntil(frames, isPingAck("stalled"));
      expect(dataBytes(seen)).toBe(0);
      expect(seen.some((f) => f.type === Type.HEADERS)).toBe(false);
      // Room for the rest: it comes, then the trailers.
      raw.socket.write(frame(Type.WINDOW_UPDATE, 0, 1, uint32(405)));
      seen = await framesUntil(frames, (f) => f.type === Type.HEADERS && (f.flags & 0x1) !== 0);
      expect(dataBytes(seen)).toBe(405);
      expect(seen.at(-1)?.payload.toString("latin1")).toContain("grpc-status");
    } finally {
      raw.close();
    }
  });

  it("ends the connection with GOAWAY FLOW_CONTROL_ERROR when a new initial window size overflows an open stream's window", async () => {
    const raw = await rawServer(new Map([["/x.Y/Idle", idle]]));
    try {
      raw.socket.write(
        Buffer.concat([
          PREFACE,
          frame(Type.SETTINGS, 0, 0, initialWindow(0)),
          frame(Type.HEADERS, 0x4, 1, requestBlock("/x.Y/Idle")),
          frame(Type.WINDOW_UPDATE, 0, 1, uint32(2 ** 31 - 1)), // the largest window a stream may have
          frame(Type.SETTINGS, 0, 0, initialWindow(1)), // one more
          ping("after"),
        ]),
      );
      const frames = await framesUntil(framesFrom(raw.socket)[Symbol.asyncIterator](), (f) => f.type === Type.GOAWAY || isPingAck("after")(f));
      expect(goawayCode(frames)).toBe(3); // FLOW_CONTROL_ERROR
    } finally {
      raw.close();
    }
  });

  it("ends the connection when a header block goes on in endless empty CONTINUATION frames", async () => {
    const raw = await rawServer(new Map([["/x.Y/Idle", idle]]));
    try {
      const block = requestBlock("/x.Y/Idle");
      const empty = frame(Type.CONTINUATION, 0, 1, Buffer.alloc(0));
      raw.socket.write(Buffer.concat([PREFACE, frame(Type.HEADERS, 0, 1, block), ...Array.from({ length: 2000 }, () => empty), ping("after")]));
      const frames = await framesUntil(framesFrom(raw.socket)[Symbol.asyncIterator](), (f) => f.type === Type.GOAWAY);
      const goaway = frames.find((f) => f.type === Type.GOAWAY);
      expect(goaway?.payload.readUInt32BE(4)).toBe(1); // PROTOCOL_ERROR
      // Refused for its length, not only when the PING finally interrupts it.
      expect(goaway?.payload.subarray(8).toString()).toContain("header block too large");
    } finally {
      raw.close();
    }
  });

  it("refuses a stream whose id goes backwards with RST_STREAM STREAM_CLOSED, and serves the others", async () => {
    const raw = await rawServer(new Map([["/x.Y/Reply", async (call: ServerCall) => call.send(new Uint8Array([7]))]]));
    try {
      raw.socket.write(
        Buffer.concat([
          PREFACE,
          frame(Type.SETTINGS, 0, 0, Buffer.alloc(0)),
          frame(Type.HEADERS, 0x5, 3, requestBlock("/x.Y/Reply")),
          frame(Type.HEADERS, 0x5, 1, requestBlock("/x.Y/Reply")), // below the last id: no new stream
          ping("after"),
        ]),
      );
      const iterator = framesFrom(raw.socket)[Symbol.asyncIterator]();
      const frames = await framesUntil(iterator, isPingAck("after"));
      expect(frames.find((f) => f.type === Type.RST_STREAM && f.streamId === 1)?.payload.readUInt32BE(0)).toBe(5); // STREAM_CLOSED
      expect(frames.some((f) => f.streamId === 1 && f.type !== Type.RST_STREAM)).toBe(false);
      expect(goawayCode(frames)).toBeUndefined();
      // Stream 3 is answered whole: its message, then its trailers.
      const ended = (f: Frame) => f.type === Type.HEADERS && f.streamId === 3 && (f.flags & 0x1) !== 0;
      if (!frames.some(ended)) frames.push(...(await framesUntil(iterator, ended)));
      expect(dataBytes(frames.filter((f) => f.streamId === 3))).toBe(6);
    } finally {
      raw.close();
    }
  });

  it("ends the connection with GOAWAY ENHANCE_YOUR_CALM when the peer floods PINGs and reads no answer", async () => {
    // A fake peer, as no socket can be told to stop reading at a known point:
    // the server's first write is never called back until the end, so the
    // rest pile up in the writable buffer as they would for a peer that does not read.
    const written: Buffer[] = [];
    let reading = false;
    let release: (() => void) | undefined;
    const peer = new Duplex({
      writableHighWaterMark: 16 * 1024,
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        written.push(chunk);
        if (reading) callback();
        else release = () => callback();
      },
    });
    const served = serveGrpc(peer, new Map());
    try {
      const pings = 30_000;
      const flood = frame(Type.PING, 0, 0, Buffer.from("flooding"));
      peer.push(Buffer.concat([PREFACE, frame(Type.SETTINGS, 0, 0, Buffer.alloc(0)), ...Array.from({ length: pings }, () => flood)]));
      await new Promise((resolve) => setImmediate(resolve));
      reading = true;
      release?.();
      await new Promise((resolve) => setImmediate(resolve));
      const frames: Frame[] = [];
      for await (const f of framesFrom(Readable.from([Buffer.concat(written)]))) frames.push(f);
      expect(goawayCode(frames)).toBe(11); // ENHANCE_YOUR_CALM
      const acks = frames.filter((f) => f.type === Type.PING && f.flags & 0x1).length;
      expect(acks).toBeGreaterThan(0);
      expect(acks).toBeLessThan(pings);
    } finally {
      served.close();
    }
  });
});

describe("ChunkQueue", () => {
  it("hands out pieces of any size across chunks of any size, byte for byte", () => {
    const data = Buffer.from(Array.from({ length: 20_000 }, (_, i) => (i * 31 + 7) % 251));
    // Chunk and piece sizes from fixed cycles that fall out of step with each other.
    const chunkSizes = [1, 7, 300, 2, 4096, 13, 9];
    const pieceSizes = [5, 9, 1, 16_384, 3, 700, 2];
    const queue = new ChunkQueue();
    const out: Buffer[] = [];
    let fed = 0;
    let taken = 0;
    for (let step = 0; taken < data.length; step++) {
      if (fed < data.length && (queue.length < 20_000 || step % 2 === 0)) {
        const n = Math.min(chunkSizes[step % chunkSizes.length]!, data.length - fed);
        queue.push(data.subarray(fed, fed + n));
        fed += n;
      }
      const n = Math.min(pieceSizes[step % pieceSizes.length]!, queue.length);
      if (n === 0) continue;
      const peeked = Buffer.from(queue.peek(n));
      const piece = queue.take(n);
      expect(piece.equals(peeked)).toBe(true);
      out.push(Buffer.from(piece));
      taken += n;
    }
    expect(Buffer.concat(out).equals(data)).toBe(true);
    expect(queue.length).toBe(0);
  });
});
