// fsutil.types.Packet by hand, for the DiffCopy hot path: one STAT per entry
// and DATA per 32 KiB go out for every transfer, so they are written straight
// into a MessageBatch (no message objects, no intermediate buffers). The
// bytes are what the generated code's toBinary gives (fields in number order,
// defaults left out); a test holds the two together.
import type { MessageBatch } from "../message-batch.js";
import { ProtobufWireError, readFields, varintSize } from "../protobuf-wire.js";
import type { TreeEntry } from "../filesync/tree-source.js";

/** fsutil.types.Packet.PacketType */
export const PacketType = { STAT: 0, REQ: 1, DATA: 2, FIN: 3, ERR: 4 } as const;

// Field tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
const PACKET_TYPE = 0x08;
const PACKET_STAT = 0x12;
const PACKET_ID = 0x18;
const PACKET_DATA = 0x22;
const STAT_PATH = 0x0a;
const STAT_MODE = 0x10;
const STAT_UID = 0x18;
const STAT_GID = 0x20;
const STAT_SIZE = 0x28;
const STAT_MOD_TIME = 0x30;
const STAT_LINKNAME = 0x3a;
const STAT_DEVMAJOR = 0x40;
const STAT_DEVMINOR = 0x48;

/** A STAT packet for `entry`. */
export function writeStat(batch: MessageBatch, entry: TreeEntry): void {
  const pathBytes = Buffer.byteLength(entry.path, "utf8");
  const linkBytes = entry.linkname === "" ? 0 : Buffer.byteLength(entry.linkname, "utf8");
  const mode = entry.mode >>> 0;
  // int64 on the wire: a negative time is ten bytes of two's complement.
  const timeLow = Number(BigInt.asUintN(32, entry.modTimeNs));
  const timeHigh = Number(BigInt.asUintN(32, entry.modTimeNs >> 32n));
  const devmajor = entry.devmajor ?? 0;
  const devminor = entry.devminor ?? 0;

  let stat = 0;
  if (pathBytes > 0) stat += 1 + varintSize(pathBytes) + pathBytes;
  if (mode !== 0) stat += 1 + varintSize(mode);
  if (entry.uid !== 0) stat += 1 + varintSize(entry.uid);
  if (entry.gid !== 0) stat += 1 + varintSize(entry.gid);
  if (entry.size !== 0) stat += 1 + varintSize(entry.size);
  if (timeLow !== 0 || timeHigh !== 0) stat += 1 + varint64Size(timeLow, timeHigh);
  if (linkBytes > 0) stat += 1 + varintSize(linkBytes) + linkBytes;
  if (devmajor !== 0) stat += 1 + varintSize(devmajor);
  if (devminor !== 0) stat += 1 + varintSize(devminor);

  // The type is STAT (0): left out, as a default.
  batch.begin(1 + varintSize(stat) + stat);
  batch.varint(PACKET_STAT);
  batch.varint(stat);
  if (pathBytes > 0) {
    batch.varint(STAT_PATH);
    batch.varint(pathBytes);
    batch.utf8(entry.path, pathBytes);
  }
  if (mode !== 0) field(batch, STAT_MODE, mode);
  if (entry.uid !== 0) field(batch, STAT_UID, entry.uid);
  if (entry.gid !== 0) field(batch, STAT_GID, entry.gid);
  if (entry.size !== 0) field(batch, STAT_SIZE, entry.size);
  if (timeLow !== 0 || timeHigh !== 0) {
    batch.varint(STAT_MOD_TIME);
    batch.varint64(timeLow, timeHigh);
  }
  if (linkBytes > 0) {
    batch.varint(STAT_LINKNAME);
    batch.varint(linkBytes);
    batch.utf8(entry.linkname, linkBytes);
  }
  if (devmajor !== 0) field(batch, STAT_DEVMAJOR, devmajor);
  if (devminor !== 0) field(batch, STAT_DEVMINOR, devminor);
}

/** The STAT without a stat that ends the listing: an empty message. */
export function writeEndOfListing(batch: MessageBatch): void {
  batch.begin(0);
}

/**
 * DATA for file `id`; empty `data` ends the file. `data` is referenced, not
 * copied, when large: it must stay unchanged until the batch is written.
 */
export function writeData(batch: MessageBatch, id: number, data: Uint8Array): void {
  const head = 2 + (id !== 0 ? 1 + varintSize(id) : 0) + (data.byteLength > 0 ? 1 + varintSize(data.byteLength) : 0);
  batch.begin(head + data.byteLength, head);
  field(batch, PACKET_TYPE, PacketType.DATA);
  if (id !== 0) field(batch, PACKET_ID, id);
  if (data.byteLength > 0) {
    batch.varint(PACKET_DATA);
    batch.varint(data.byteLength);
    batch.tail(data);
  }
}

/** FIN, or ERR with its message. */
export function writeControl(batch: MessageBatch, type: typeof PacketType.FIN | typeof PacketType.ERR, message = ""): void {
  const data = Buffer.from(message, "utf8");
  batch.begin(2 + (data.length > 0 ? 1 + varintSize(data.length) + data.length : 0));
  field(batch, PACKET_TYPE, type);
  if (data.length > 0) {
    batch.varint(PACKET_DATA);
    batch.varint(data.length);
    batch.bytes(data);
  }
}

/** What a receiver sends: REQ, FIN or ERR. Other fields are skipped. */
export interface ReceivedPacket {
  type: number;
  id: number;
  data: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/**
 * Reads a packet's type, id and data, skipping the rest (a stat, unknown
 * fields). Throws on bytes that are not a protobuf message.
 */
export function readPacket(bytes: Uint8Array): ReceivedPacket {
  const packet: ReceivedPacket = { type: 0, id: 0, data: EMPTY };
  try {
    readFields(
      bytes,
      (fieldNumber, value) => {
        if (fieldNumber === 1) packet.type = value;
        else if (fieldNumber === 3) packet.id = value % 2 ** 32; // uint32: Go keeps the low bits
      },
      (fieldNumber, data) => {
        if (fieldNumber === 4) packet.data = data;
      },
    );
  } catch (err) {
    if (err instanceof ProtobufWireError) throw new Error(`malformed packet: ${err.message}`);
    throw err;
  }
  return packet;
}

function field(batch: MessageBatch, tag: number, value: number): void {
  batch.varint(tag);
  batch.varint(value);
}

function varint64Size(low: number, high: number): number {
  if (high === 0) return varintSize(low);
  // 32 low bits take 4 full bytes plus 4 bits of the fifth.
  let bits = 32 + (32 - Math.clz32(high));
  return Math.ceil(bits / 7);
}
