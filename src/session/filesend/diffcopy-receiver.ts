import { create, fromBinary } from "@bufbuild/protobuf";
import { type Packet, Packet_PacketType, PacketSchema, type Stat } from "../../gen/fsutil/types/packet_pb.js";
import { createLogger } from "../../log.js";
import { GrpcCode, GrpcStatusError, type ServerCall, sendMessage } from "../grpc-server.js";
import { StagingDirectory } from "./staging-directory.js";
import { type OpenFile, TreeWriter } from "./tree-writer.js";

const log = createLogger("filesend");

/**
 * Files whose content may be requested at once. Each holds an open file
 * handle; the daemon (fsutil's sender) serves four at a time and queues up
 * to 128 requests, so this keeps it busy without holding many handles.
 */
export const MAX_OPEN_FILES = 16;

/**
 * Receives the `local` exporter's output into `dest`: the receiving half of
 * fsutil's DiffCopy, with the daemon sending. Everything goes to a
 * temporary sibling directory first, moved into `dest` (merged into what is
 * there, as buildctl does) only once the transfer is complete: a failed or
 * cancelled transfer leaves `dest` as it was and removes the sibling.
 *
 * The daemon sends STATs (ended by one without `stat`) and, concurrently,
 * answers our REQ{id} for each regular file with DATA chunks and an empty
 * DATA. Requests go out as STATs arrive, at most MAX_OPEN_FILES at a time;
 * each chunk is written to its open file before the next message is read,
 * so memory stays at one message. When every file is written we send FIN;
 * the daemon answers FIN, or ends or cancels the call — all success, since
 * everything is on disk by then.
 *
 * On failure we send the daemon an ERR with the reason and throw. Returns
 * the regular files written (hard links included) and the content bytes
 * received.
 */
export async function receiveTree(call: ServerCall, dest: string): Promise<{ files: number; bytes: number }> {
  const staging = await StagingDirectory.besides(dest);
  try {
    const receiver = new TreeReceiver(call, await TreeWriter.create(staging.path));
    let received: { files: number; bytes: number };
    try {
      received = await receiver.run();
    } catch (err) {
      await receiver.tellSender(err);
      throw err;
    } finally {
      await receiver.closeOpenFiles();
    }
    await staging.commit();
    return received;
  } finally {
    await staging.remove();
  }
}

class TreeReceiver {
  /** The ID the next STAT gets: fsutil counts every STAT, whatever its type. */
  private nextId = 0;
  private listingDone = false;
  private finSent = false;
  /** Files created empty, waiting for a request slot. */
  private readonly waiting = new Queue<{ id: number; stat: Stat }>();
  private readonly open = new Map<number, OpenFile>();
  private files = 0;
  private bytes = 0;

  constructor(
    private readonly call: ServerCall,
    private readonly writer: TreeWriter,
  ) {}

  async run(): Promise<{ files: number; bytes: number }> {
    const messages = this.call.messages()[Symbol.asyncIterator]();
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await messages.next();
      } catch (err) {
        // Once our FIN is out, the daemon may just cancel the call.
        if (this.finSent) return this.result();
        throw err;
      }
      if (next.done) break;
      const packet = fromBinary(PacketSchema, next.value);
      if (packet.type === Packet_PacketType.PACKET_FIN) {
        if (!this.finSent) throw protocolError("the daemon finished before sending every file");
        return this.result();
      }
      await this.handle(packet);
      if (!this.finSent && this.listingDone && this.waiting.size === 0 && this.open.size === 0) {
        await this.writer.finish();
        await this.send(Packet_PacketType.PACKET_FIN);
        this.finSent = true;
      }
    }
    if (!this.finSent) throw protocolError("the daemon ended the transfer before sending every file");
    return this.result();
  }

  /** Best effort: the daemon learns why (fsutil shows "error from receiver: …"). */
  async tellSender(err: unknown): Promise<void> {
    if (this.call.signal.aborted) return;
    const message = err instanceof Error ? err.message : String(err);
    await sendMessage(this.call, PacketSchema, create(PacketSchema, { type: Packet_PacketType.PACKET_ERR, data: new TextEncoder().encode(message) })).catch(
      (sendErr: unknown) => log(`could not send ERR to the daemon: ${sendErr instanceof Error ? sendErr.message : String(sendErr)}`),
    );
  }

  /** Closes the handles of files cut short by a failure. */
  async closeOpenFiles(): Promise<void> {
    for (const [id, file] of this.open) {
      this.open.delete(id);
      await file.handle.close().catch((err: unknown) => log(`closing ${file.stat.path}: ${err instanceof Error ? err.message : String(err)}`));
    }
  }

  private async handle(packet: Packet): Promise<void> {
    switch (packet.type) {
      case Packet_PacketType.PACKET_STAT:
        return this.onStat(packet.stat);
      case Packet_PacketType.PACKET_DATA:
        return this.onData(packet.id, packet.data);
      case Packet_PacketType.PACKET_ERR:
        throw new GrpcStatusError(GrpcCode.UNKNOWN, `error from sender: ${new TextDecoder().decode(packet.data)}`);
      default:
        throw protocolError(`unexpected packet type ${packet.type} from the sender`);
    }
  }

  private async onStat(stat: Stat | undefined): Promise<void> {
    if (this.listingDone) throw protocolError("STAT after the end of the listing");
    if (!stat) {
      this.listingDone = true;
      return;
    }
    const id = this.nextId++;
    const kind = await this.writer.add(stat);
    if (kind === "hardlink") this.files++;
    if (kind === "file") {
      this.waiting.push({ id, stat });
      await this.requestMore();
    }
  }

  private async onData(id: number, data: Uint8Array): Promise<void> {
    const file = this.open.get(id);
    if (!file) throw protocolError(`DATA for file id ${id}, which is not being received`);
    if (data.length > 0) {
      await this.writer.write(file, data);
      this.bytes += data.length;
      return;
    }
    this.open.delete(id);
    await this.writer.completeFile(file);
    this.files++;
    await this.requestMore();
  }

  /** Opens waiting files and requests their content while slots are free. */
  private async requestMore(): Promise<void> {
    while (this.open.size < MAX_OPEN_FILES) {
      const next = this.waiting.shift();
      if (!next) return;
      this.open.set(next.id, await this.writer.openFile(next.stat));
      await this.send(Packet_PacketType.PACKET_REQ, next.id);
    }
  }

  private send(type: Packet_PacketType, id = 0): Promise<void> {
    return sendMessage(this.call, PacketSchema, create(PacketSchema, { type, id }));
  }

  private result(): { files: number; bytes: number } {
    return { files: this.files, bytes: this.bytes };
  }
}

function protocolError(message: string): GrpcStatusError {
  return new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, message);
}

/** A FIFO with O(1) shift. */
class Queue<T> {
  private items: T[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}
