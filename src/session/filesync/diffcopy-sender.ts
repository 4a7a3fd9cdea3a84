// The sending side of fsutil's DiffCopy, over one FileSync.DiffCopy call
// whose messages are fsutil.types.Packet:
//
//   us:     STAT… (one per entry, ID = its index), STAT without stat (end)
//   daemon: REQ{ID} for files it wants — while our STATs still go out
//   us:     DATA{ID, ≤32 KiB}… then DATA{ID} empty, per REQ, up to 4 files at once
//   daemon: FIN           us: FIN, and the call ends OK
//
// Either side may send ERR{data=message} instead and end the call.
import { create, toBinary } from "@bufbuild/protobuf";
import { type Packet, Packet_PacketType, PacketSchema, StatSchema } from "../../gen/fsutil/types/packet_pb.js";
import { createLogger } from "../../log.js";
import { decodeMessages, type ServerCall } from "../grpc-server.js";
import { isRegularGoMode } from "../fsutil/file-mode.js";
import { TreeFilter, type TransferFilter } from "./tree-filter.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";
import { walkTree } from "./tree-walk.js";

export type { TransferFilter } from "./tree-filter.js";

const log = createLogger("filesync");

/** Bytes per DATA packet, as Go sends them. */
export const DATA_CHUNK_SIZE = 32 * 1024;
/** Files sent at once, as Go does. */
const MAX_FILES_IN_FLIGHT = 4;

/** An error the daemon reported (ERR) or caused; we do not answer it with our own ERR. */
class PeerError extends Error {}

/**
 * Sends `source`, filtered, to the daemon over `call`; resolves once the
 * FIN exchange is done (the handler then ends the call OK). Rejects on ERR
 * from the daemon, a bad REQ, a failure reading the source, or when
 * `call.signal` aborts.
 */
export async function sendTree(source: TreeSource, filter: TransferFilter, call: ServerCall): Promise<void> {
  const treeFilter = await TreeFilter.create(source, filter);
  await new DiffCopySender(source, treeFilter, call).run();
}

class DiffCopySender {
  /** Regular files the daemon may still request, by STAT ID. */
  private readonly requestable = new Map<number, string>();
  private readonly queue: Array<{ id: number; path: string }> = [];
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly controller = new AbortController();
  private failure: ((err: unknown) => void) | undefined;

  constructor(
    private readonly source: TreeSource,
    private readonly filter: TreeFilter,
    private readonly call: ServerCall,
  ) {
  }

  async run(): Promise<void> {
    const { signal } = this.controller;
    const onCallAbort = () => this.controller.abort(new PeerError(`${this.call.method}: the call was cancelled`));
    if (this.call.signal.aborted) onCallAbort();
    this.call.signal.addEventListener("abort", onCallAbort, { once: true });

    const failed = new Promise<never>((_, reject) => {
      this.failure = reject;
    });
    failed.catch(() => {});
    const listing = this.sendListing().catch((err: unknown) => this.fail(err));
    const finished = this.receive().catch((err: unknown) => this.fail(err));
    try {
      await Promise.race([
        (async () => {
          await finished; // FIN exchanged
          await listing;
          await this.filesIdle();
        })(),
        failed,
      ]);
    } catch (err) {
      const own = !(err instanceof PeerError) && !signal.aborted;
      this.controller.abort(err);
      if (own) this.sendError(err);
      throw err;
    } finally {
      this.call.signal.removeEventListener("abort", onCallAbort);
      if (!signal.aborted) this.controller.abort(new Error("transfer over"));
    }
  }

  private fail(err: unknown): void {
    this.failure?.(err);
  }

  /** Every kept entry as a STAT, then the end-of-listing STAT. */
  private async sendListing(): Promise<void> {
    let id = 0;
    for await (const entry of walkTree(this.source, this.filter, this.controller.signal)) {
      // Registered before the STAT goes out: the daemon may ask at once.
      if (isRegularGoMode(entry.mode)) this.requestable.set(id, entry.path);
      id++;
      await this.send(create(PacketSchema, { type: Packet_PacketType.PACKET_STAT, stat: statOf(entry) }));
    }
    // No stat field at all: this encodes to zero bytes (an empty Stat would be "unclean path").
    await this.send(create(PacketSchema, { type: Packet_PacketType.PACKET_STAT }));
  }

  /** Reads the daemon's packets until FIN (answered) or a failure. */
  private async receive(): Promise<void> {
    const packets = decodeMessages(this.call, PacketSchema)[Symbol.asyncIterator]();
    for (;;) {
      const next = await this.unlessAborted(packets.next());
      if (next.done) throw new PeerError(`${this.call.method}: the daemon closed the stream before FIN`);
      const packet = next.value;
      switch (packet.type) {
        case Packet_PacketType.PACKET_REQ:
          this.request(packet.id);
          break;
        case Packet_PacketType.PACKET_FIN:
          await this.send(create(PacketSchema, { type: Packet_PacketType.PACKET_FIN }));
          return;
        case Packet_PacketType.PACKET_ERR:
          throw new PeerError(`error from receiver: ${Buffer.from(packet.data).toString("utf8")}`);
        default:
          // STAT/DATA never come from a receiver; Go ignores them too.
          break;
      }
    }
  }

  private request(id: number): void {
    const path = this.requestable.get(id);
    if (path === undefined) throw new Error(`invalid file id ${id}`);
    this.requestable.delete(id); // a second REQ for it is invalid too
    this.queue.push({ id, path });
    this.startFiles();
  }

  private startFiles(): void {
    while (this.inFlight < MAX_FILES_IN_FLIGHT && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.inFlight++;
      this.sendFile(job.id, job.path).then(
        () => {
          this.inFlight--;
          this.startFiles();
          if (this.inFlight === 0 && this.queue.length === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        },
        (err: unknown) => this.fail(err),
      );
    }
  }

  private filesIdle(): Promise<void> {
    if (this.inFlight === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** DATA chunks, then the empty DATA that ends the file (sent alone if the file cannot be opened, as Go does). */
  private async sendFile(id: number, path: string): Promise<void> {
    let content: AsyncIterable<Uint8Array> | undefined;
    try {
      content = await this.source.open(path);
    } catch (err) {
      log(`${this.source.description}: cannot open ${path}, sending it empty: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (content) {
      for await (const chunk of content) {
        for (let offset = 0; offset < chunk.byteLength; offset += DATA_CHUNK_SIZE) {
          const data = chunk.subarray(offset, offset + DATA_CHUNK_SIZE);
          await this.send(create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id, data }));
        }
      }
    }
    await this.send(create(PacketSchema, { type: Packet_PacketType.PACKET_DATA, id }));
  }

  /** Sends one packet, waiting for the stream to take more; gives up when the transfer is aborted. */
  private async send(packet: Packet): Promise<void> {
    this.controller.signal.throwIfAborted();
    await this.unlessAborted(this.call.send(toBinary(PacketSchema, packet)));
  }

  /**
   * Waits for `promise`, or rejects when the transfer aborts first. The abort
   * listener lives only as long as this one wait: racing every packet against
   * one long-lived promise would pile up a reaction per packet until the end.
   */
  private unlessAborted<T>(promise: Promise<T>): Promise<T> {
    const { signal } = this.controller;
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      promise.then(
        (value) => {
          signal.removeEventListener("abort", onAbort);
          resolve(value);
        },
        (err: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      );
    });
  }

  /**
   * Tells the daemon why we stop ("error from sender: …" on its side). Not
   * awaited: the packet is queued before the call's trailers either way, and
   * a daemon that stopped reading must not keep the handler from ending.
   */
  private sendError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const packet = create(PacketSchema, { type: Packet_PacketType.PACKET_ERR, data: Buffer.from(message, "utf8") });
    this.call.send(toBinary(PacketSchema, packet)).catch((sendErr: unknown) => {
      log(`could not send ERR (${message}): ${sendErr instanceof Error ? sendErr.message : String(sendErr)}`);
    });
  }
}

function statOf(entry: TreeEntry) {
  return create(StatSchema, {
    path: entry.path,
    mode: entry.mode >>> 0,
    uid: entry.uid,
    gid: entry.gid,
    size: BigInt(entry.size),
    modTime: entry.modTimeNs,
    linkname: entry.linkname,
    devmajor: BigInt(entry.devmajor ?? 0),
    devminor: BigInt(entry.devminor ?? 0),
  });
}
