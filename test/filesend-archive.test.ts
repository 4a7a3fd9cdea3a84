// Archive outputs (tar, oci, docker exporters) and the FileSend attachable's
// routing, with this test playing the daemon over the real session server:
// BytesMessage chunks of 32 KiB as BuildKit sends them, cancellations and
// exporter ids the real daemon cannot be steered into.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Packet_PacketType, PacketSchema, StatSchema } from "../src/gen/fsutil/types/packet_pb.js";
import { BytesMessageSchema } from "../src/gen/moby/filesync/v1/filesync_pb.js";
import { GrpcCode, type Routes, type ServerCall } from "../src/session/grpc-server.js";
import { receiveArchive } from "../src/session/filesend/archive-receiver.js";
import { FILE_SEND_DIFFCOPY, fileSendAttachable } from "../src/session/filesend/file-send.js";
import type { OutputTarget } from "../src/session/filesend/targets.js";
import { type DaemonCall, type DaemonSide, startDaemonSide } from "./support/daemon-side.js";

const CHUNK = 32 * 1024;
const ARCHIVE = "/test.Archive/Receive";

let daemon: DaemonSide | undefined;
let dir: string;
/** Each handler run, as the session server saw it. */
let settled: Promise<unknown>[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "filesend-archive-"));
  settled = [];
});

afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
  for (const s of settled) s.catch(() => {});
  await fs.rm(dir, { recursive: true, force: true });
});

/** Routes whose handler runs are recorded in `settled`. */
function recorded(routes: Routes): Routes {
  return new Map(
    [...routes].map(([method, handler]) => [
      method,
      (call: ServerCall) => {
        const run = handler(call);
        settled.push(run);
        return run;
      },
    ]),
  );
}

/** Serves receiveArchive(call, dest) and records its result. */
async function serveArchive(dest: string | NodeJS.WritableStream): Promise<{ result: () => Promise<{ bytes: number }> }> {
  let result: Promise<{ bytes: number }> | undefined;
  daemon = await startDaemonSide(
    recorded(
      new Map([
        [
          ARCHIVE,
          async (call: ServerCall) => {
            result = receiveArchive(call, dest);
            await result;
          },
        ],
      ]),
    ),
  );
  return { result: () => result! };
}

function sendArchive(call: DaemonCall, archive: Uint8Array, from = 0, to = archive.length): void {
  for (let offset = from; offset < to; offset += CHUNK) {
    call.send(toBinary(BytesMessageSchema, create(BytesMessageSchema, { data: archive.subarray(offset, Math.min(offset + CHUNK, to)) })));
  }
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

async function until(condition: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("receiveArchive", () => {
  it("writes the archive to a path, creating parents, with no partial file left", async () => {
    const archive = randomBytes(5 * 1024 * 1024 + 777);
    const dest = path.join(dir, "nested/deeper/image.tar");
    const { result } = await serveArchive(dest);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, archive);
    call.end();

    expect(await call.status).toEqual({ code: GrpcCode.OK, message: "" });
    expect(await result()).toEqual({ bytes: archive.length });
    expect(Buffer.compare(await fs.readFile(dest), archive)).toBe(0);
    expect(await fs.readdir(path.dirname(dest))).toEqual(["image.tar"]);
  });

  it("replaces an existing file at the path", async () => {
    const dest = path.join(dir, "out.tar");
    await fs.writeFile(dest, "old content that is longer than the new one");
    await serveArchive(dest);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, Buffer.from("new"));
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(await fs.readFile(dest, "utf8")).toBe("new");
  });

  it("writes to a Writable with backpressure and ends it", async () => {
    const archive = randomBytes(3 * 1024 * 1024 + 5);
    const highWaterMark = 64 * 1024;
    let maxBuffered = 0;
    const received: Buffer[] = [];
    let ended = false;
    // A slow consumer: if the receiver ignored backpressure, writes would pile up in its buffer.
    const slow = new Writable({
      highWaterMark,
      write(chunk: Buffer, _encoding, callback) {
        maxBuffered = Math.max(maxBuffered, this.writableLength);
        received.push(chunk);
        setTimeout(callback, 1);
      },
      final(callback) {
        ended = true;
        callback();
      },
    });
    const { result } = await serveArchive(slow);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, archive);
    call.end();

    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(await result()).toEqual({ bytes: archive.length });
    expect(ended).toBe(true);
    expect(Buffer.compare(Buffer.concat(received), archive)).toBe(0);
    expect(maxBuffered).toBeLessThanOrEqual(highWaterMark + CHUNK);
  });

  it("writes to a PassThrough that is read as it fills", async () => {
    const archive = randomBytes(2 * 1024 * 1024 + 1);
    const out = new PassThrough();
    const collected = collect(out);
    await serveArchive(out);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, archive);
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(Buffer.compare(await collected, archive)).toBe(0);
  });

  it("removes the partial file when the daemon cancels mid-transfer", async () => {
    const archive = randomBytes(4 * 1024 * 1024);
    const dest = path.join(dir, "out.tar");
    await serveArchive(dest);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, archive, 0, archive.length / 2);
    const partialSize = async () => {
      const partial = (await fs.readdir(dir)).find((name) => name.startsWith("out.tar.partial-"));
      return partial ? (await fs.stat(path.join(dir, partial))).size : 0;
    };
    await until(async () => (await partialSize()) > 0, "the partial file");
    daemon!.dropConnection();

    await expect(settled[0]).rejects.toThrow(/cancelled/);
    expect(await fs.readdir(dir)).toEqual([]);
  });

  it("destroys a Writable with the error when the daemon cancels mid-transfer", async () => {
    const out = new PassThrough();
    let seen = 0;
    out.on("data", (chunk: Buffer) => (seen += chunk.length));
    const closed = new Promise<void>((resolve) => out.on("close", resolve));
    await serveArchive(out);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, randomBytes(512 * 1024));
    await until(() => seen > 0, "some bytes");
    daemon!.dropConnection();

    await closed;
    await expect(settled[0]).rejects.toThrow(/cancelled/);
    expect(out.destroyed).toBe(true);
    expect(out.errored?.message).toMatch(/cancelled/);
  });

  it("ends the call with the error when the Writable fails, and destroys it", async () => {
    const failing = new Writable({
      write(_chunk, _encoding, callback) {
        callback(new Error("disk full"));
      },
    });
    await serveArchive(failing);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, randomBytes(256 * 1024));
    call.end();
    // Trailers with our message, not a reset stream.
    expect(await call.status).toEqual({ code: GrpcCode.UNKNOWN, message: "disk full" });
    await expect(settled[0]).rejects.toThrow("disk full");
    expect(failing.destroyed).toBe(true);
  });

  it("refuses a Writable that is already closed", async () => {
    const closed = new PassThrough();
    closed.destroy();
    await serveArchive(closed);
    const call = daemon!.call(ARCHIVE);
    sendArchive(call, Buffer.from("x"));
    call.end();
    expect((await call.status).message).toMatch(/output stream was closed/);
  });

  it("writes an archive with no chunks as an empty file", async () => {
    const dest = path.join(dir, "empty.tar");
    const { result } = await serveArchive(dest);
    const call = daemon!.call(ARCHIVE);
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect(await result()).toEqual({ bytes: 0 });
    expect((await fs.stat(dest)).size).toBe(0);
  });
});

describe("fileSendAttachable", () => {
  function treeStat(pathName: string, mode: number) {
    return toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_STAT, stat: create(StatSchema, { path: pathName, mode }) }));
  }

  it("routes each call to its exporter's target and exposes exporter-md-* metadata", async () => {
    const tarPath = path.join(dir, "out.tar");
    const treeDir = path.join(dir, "tree");
    const targets = new Map<number, OutputTarget>([
      [0, { kind: "archive", dest: tarPath }],
      [1, { kind: "directory", dest: treeDir }],
    ]);
    const attachable = fileSendAttachable(targets);
    daemon = await startDaemonSide(recorded(attachable.routes));
    expect([...attachable.routes.keys()]).toEqual(["/moby.filesync.v1.FileSend/DiffCopy"]);

    // Exporter 1: a local output, fsutil packets.
    const tree = daemon.call(FILE_SEND_DIFFCOPY, { "buildkit-attachable-exporter-id": "1" });
    tree.send(treeStat("hello.txt", 0o644));
    tree.send(toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_STAT })));
    for await (const bytes of tree.messages) {
      const p = fromBinary(PacketSchema, bytes);
      if (p.type === Packet_PacketType.PACKET_REQ) {
        expect(p.id).toBe(0);
        tree.send(toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id: 0, data: Buffer.from("hi") })));
        tree.send(toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id: 0 })));
      } else if (p.type === Packet_PacketType.PACKET_FIN) {
        tree.send(toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_FIN })));
        tree.end();
      }
    }
    expect((await tree.status).code).toBe(GrpcCode.OK);
    expect(await fs.readFile(path.join(treeDir, "hello.txt"), "utf8")).toBe("hi");

    // Exporter 0: an archive, with the exporter's response in the metadata.
    const tar = daemon.call(FILE_SEND_DIFFCOPY, {
      "buildkit-attachable-exporter-id": "0",
      "exporter-md-containerimage.digest": "sha256:abc",
      "exporter-md-image.name": "example/app:1",
    });
    sendArchive(tar, Buffer.from("tar bytes"));
    tar.end();
    expect((await tar.status).code).toBe(GrpcCode.OK);
    expect(await fs.readFile(tarPath, "utf8")).toBe("tar bytes");
    expect(attachable.exporterMetadata(0)).toEqual({ "containerimage.digest": "sha256:abc", "image.name": "example/app:1" });
    expect(attachable.exporterMetadata(1)).toEqual({});
    expect(attachable.exporterMetadata(2)).toEqual({});
  });

  it("takes a call without an exporter id (BuildKit < v0.13) as exporter 0", async () => {
    const out = new PassThrough();
    const collected = collect(out);
    const attachable = fileSendAttachable(new Map([[0, { kind: "archive", dest: out }]]));
    daemon = await startDaemonSide(attachable.routes);
    const call = daemon.call(FILE_SEND_DIFFCOPY, { "exporter-md-containerimage.digest": "sha256:def" });
    sendArchive(call, Buffer.from("old daemon"));
    call.end();
    expect((await call.status).code).toBe(GrpcCode.OK);
    expect((await collected).toString()).toBe("old daemon");
    expect(attachable.exporterMetadata(0)).toEqual({ "containerimage.digest": "sha256:def" });
  });

  it("refuses an exporter id without a target, a malformed id and a second call for one id", async () => {
    const attachable = fileSendAttachable(new Map([[0, { kind: "archive", dest: path.join(dir, "a.tar") }]]));
    daemon = await startDaemonSide(attachable.routes);

    const unknown = daemon.call(FILE_SEND_DIFFCOPY, { "buildkit-attachable-exporter-id": "7" });
    unknown.end();
    expect(await unknown.status).toEqual({ code: GrpcCode.NOT_FOUND, message: "no output target for exporter 7" });

    const malformed = daemon.call(FILE_SEND_DIFFCOPY, { "buildkit-attachable-exporter-id": "x1" });
    malformed.end();
    expect((await malformed.status).code).toBe(GrpcCode.INVALID_ARGUMENT);

    const first = daemon.call(FILE_SEND_DIFFCOPY, { "buildkit-attachable-exporter-id": "0" });
    first.end();
    expect((await first.status).code).toBe(GrpcCode.OK);
    const second = daemon.call(FILE_SEND_DIFFCOPY, { "buildkit-attachable-exporter-id": "0" });
    second.end();
    expect((await second.status).code).toBe(GrpcCode.FAILED_PRECONDITION);
  });
});
