// The hand-written fsutil packet encoder and the gRPC batch it writes into,
// held to the generated code: the same bytes as toBinary for every kind of
// entry, framed as gRPC frames them.
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Packet_PacketType, PacketSchema, StatSchema } from "../src/gen/fsutil/types/packet_pb.js";
import { GoMode } from "../src/session/fsutil/file-mode.js";
import { PacketType, readPacket, writeControl, writeData, writeEndOfListing, writeStat } from "../src/session/fsutil/packet-codec.js";
import type { TreeEntry } from "../src/session/filesync/tree-source.js";
import { GrpcFrameReader } from "../src/session/grpc-frames.js";
import { MessageBatch } from "../src/session/message-batch.js";

/** The batch's bytes cut back into messages. */
function messagesOf(batch: MessageBatch): Buffer[] {
  const reader = new GrpcFrameReader(64 * 1024 * 1024);
  const messages = reader.push(Buffer.concat(batch.take())).map((m) => Buffer.from(m.bytes));
  expect(reader.partial).toBe(false);
  return messages;
}

const entries: TreeEntry[] = [
  { path: "Dockerfile", mode: 0o644, size: 13, modTimeNs: 1_700_000_000_123_456_789n, linkname: "", uid: 0, gid: 0 },
  { path: "dir", mode: (GoMode.Dir | 0o755) >>> 0, size: 0, modTimeNs: 0n, linkname: "", uid: 0, gid: 0 },
  { path: "dir/link", mode: (GoMode.Symlink | 0o777) >>> 0, size: 6, modTimeNs: 5n, linkname: "../😀é", uid: 1000, gid: 1000 },
  { path: "before-1970", mode: 0o600, size: 2 ** 40 + 3, modTimeNs: -1_234_567_890_123n, linkname: "", uid: 0, gid: 0 },
  { path: "dev/null", mode: (GoMode.Device | GoMode.CharDevice | 0o666) >>> 0, size: 0, modTimeNs: 1n, linkname: "", uid: 0, gid: 0, devmajor: 1, devminor: 3 },
  { path: "a".repeat(3000), mode: 0o644, size: 1, modTimeNs: 2n ** 62n, linkname: "", uid: 2 ** 31, gid: 7, devmajor: 0, devminor: 0 },
];

describe("fsutil packets by hand", () => {
  it("encodes STATs as the generated code does", () => {
    const batch = new MessageBatch();
    for (const entry of entries) writeStat(batch, entry);
    writeEndOfListing(batch);
    const expected = [
      ...entries.map((e) =>
        toBinary(
          PacketSchema,
          create(PacketSchema, {
            type: Packet_PacketType.PACKET_STAT,
            stat: create(StatSchema, {
              path: e.path,
              mode: e.mode,
              uid: e.uid,
              gid: e.gid,
              size: BigInt(e.size),
              modTime: e.modTimeNs,
              linkname: e.linkname,
              devmajor: BigInt(e.devmajor ?? 0),
              devminor: BigInt(e.devminor ?? 0),
            }),
          }),
        ),
      ),
      new Uint8Array(0), // the end of the listing: a STAT without stat is no bytes at all
    ];
    expect(messagesOf(batch).map((m) => m.toString("hex"))).toEqual(expected.map((m) => Buffer.from(m).toString("hex")));
  });

  it("encodes DATA, FIN and ERR as the generated code does, large payloads by reference", () => {
    const small = Buffer.from("four");
    const large = Buffer.alloc(32 * 1024, 7);
    const fill = (batch: MessageBatch) => {
      writeData(batch, 0, small);
      writeData(batch, 300, large);
      writeData(batch, 300, new Uint8Array(0));
      writeControl(batch, PacketType.FIN);
      writeControl(batch, PacketType.ERR, "failed: ✗");
      return batch;
    };
    const batch = fill(new MessageBatch());
    // The large payload is its own segment, the very buffer given.
    expect(batch.take().some((s) => s === large)).toBe(true);
    expect(batch.byteLength).toBe(0); // taken: the batch is empty again

    const expected = [
      create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id: 0, data: small }),
      create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id: 300, data: large }),
      create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id: 300 }),
      create(PacketSchema, { type: Packet_PacketType.PACKET_FIN }),
      create(PacketSchema, { type: Packet_PacketType.PACKET_ERR, data: Buffer.from("failed: ✗") }),
    ].map((p) => Buffer.from(toBinary(PacketSchema, p)).toString("hex"));
    expect(messagesOf(fill(new MessageBatch())).map((m) => m.toString("hex"))).toEqual(expected);
  });

  it("spans many chunks of the batch without losing a byte", () => {
    const batch = new MessageBatch();
    const payloads = Array.from({ length: 500 }, (_, i) => Buffer.alloc((i * 97) % 9000, i % 251));
    payloads.forEach((p, i) => writeData(batch, i, p));
    const messages = messagesOf(batch);
    expect(messages).toHaveLength(payloads.length);
    const wrong = messages.filter((m, i) => {
      const packet = readPacket(m);
      return packet.type !== PacketType.DATA || packet.id !== i || !Buffer.from(packet.data).equals(payloads[i]!);
    });
    expect(wrong).toEqual([]);
  });

  it("reads what a receiver sends, skipping fields it does not need, and refuses garbage", () => {
    const req = toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_REQ, id: 4_000_000_000 }));
    expect(readPacket(req)).toMatchObject({ type: PacketType.REQ, id: 4_000_000_000 });
    const withStat = toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_FIN, stat: create(StatSchema, { path: "x" }) }));
    expect(readPacket(withStat)).toMatchObject({ type: PacketType.FIN, id: 0 });
    const err = toBinary(PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_ERR, data: Buffer.from("nope") }));
    expect(Buffer.from(readPacket(err).data).toString()).toBe("nope");
    expect(() => readPacket(Buffer.from([0x08]))).toThrow(/malformed/);
    expect(() => readPacket(Buffer.from([0x22, 0x05, 1]))).toThrow(/malformed/);
    expect(() => readPacket(Buffer.from([0x0f]))).toThrow(/malformed/);
  });
});
