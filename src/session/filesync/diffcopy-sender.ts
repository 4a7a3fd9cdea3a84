// The sending side of fsutil's DiffCopy, over one FileSync.DiffCopy call
// whose messages are fsutil.types.Packet:
//
//   us:     STAT… (one per entry, ID = its index), STAT without stat (end)
//   daemon: REQ{ID} for files it wants — while our STATs still go out
//   us:     DATA{ID, ≤32 KiB}… then DATA{ID} empty, per REQ, several files at once
//   daemon: FIN           us: FIN, and the call ends OK
//
// Either side may send ERR{data=message} instead and end the call.
//
// What it costs per file and per packet is what makes an upload fast: packets
// are encoded by hand into shared batches (packet-codec.ts) that go out in
// one write each, whenever the file reads and listings of one turn of the
// event loop are done or a batch is full; files are read with as few
// thread-pool hops as possible (file-reads.ts), many at once, within a bound
// on the bytes held; waits happen per batch, not per packet.
import { setImmediate as nextTurn } from "node:timers/promises";
import { createLogger } from "../../log.js";
import { raceAbort } from "../../transport/race-abort.js";
import type { ServerCall } from "../grpc-server.js";
import { MessageBatch } from "../message-batch.js";
import { isRegularGoMode } from "../fsutil/file-mode.js";
import { PacketType, readPacket, writeControl, writeData, writeEndOfListing, writeStat } from "../fsutil/packet-codec.js";
import { TreeFilter, type TransferFilter } from "./tree-filter.js";
import type { TreeSource } from "./tree-source.js";
import { ReadBufferPool } from "./file-reads.js";
import { walkTree } from "./tree-walk.js";
import { isUnreadable, type UnreadablePolicy } from "./unreadable.js";

export type { TransferFilter } from "./tree-filter.js";

const log = createLogger("filesync");

/** Bytes per DATA packet, as Go sends them. */
const DATA_CHUNK_SIZE = 32 * 1024;
/** Requested files read at once; the thread pool runs four reads at a time, the rest wait there, not behind our round trips. */
const MAX_FILES_IN_FLIGHT = 64;
/** Bytes of file content read but not yet handed to the call, at most (one file is always allowed). */
const MAX_BYTES_IN_FLIGHT = 4 * 1024 * 1024;
/** Read buffers per transfer for large files (READ_CHUNK each), reused as their bytes are sent. */
const READ_BUFFERS = 4;
/** A batch this large is written at once rather than at the end of the event loop's turn. */
const FLUSH_BYTES = 512 * 1024;
/** The listing gives the event loop a turn at least this often, even when every listing is answered at once (in-memory trees). */
const MAX_TURN_MS = 10;

const EMPTY = new Uint8Array(0);

/** An error the daemon reported (ERR) or caused; we do not answer it with our own ERR. */
class PeerError extends Error {}

/** A file the daemon asked for. */
interface FileJob {
  id: number;
  path: string;
  size: number;
}

/**
 * Sends `source`, filtered, to the daemon over `call`; resolves once the
 * FIN exchange is done (the handler then ends the call OK). Rejects on ERR
 * from the daemon, a bad REQ, a failure reading the source, or when
 * `call.signal` aborts.
 */
export async function sendTree(source: TreeSource, filter: TransferFilter, call: ServerCall, unreadable: UnreadablePolicy): Promise<void> {
  const treeFilter = await TreeFilter.create(source, filter);
  await new DiffCopySender(source, treeFilter, call, unreadable).run();
}

class DiffCopySender {
  /**
   * Regular files the daemon may still request: path and size by STAT ID
   * (dense arrays, not an object per file: a listing of 200,000 files all
   * wait here while the daemon works through them).
   */
  private readonly requestablePaths: Array<string | undefined> = [];
  private readonly requestableSizes: number[] = [];
  /** Requested and not started yet: STAT IDs and their paths. */
  private queue: number[] = [];
  private queuePaths: string[] = [];
  private queueHead = 0;
  private inFlight = 0;
  private bytesInFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly batch = new MessageBatch();
  /** Pooled read buffers the batch refers to, released once it is sent. */
  private batchReads: Uint8Array[] = [];
  private flushScheduled = false;
  /** Settles when the call takes more after a write it could not take at once. */
  private congested: Promise<void> | undefined;
  private readonly controller = new AbortController();
  private readonly pool = new ReadBufferPool(READ_BUFFERS, this.controller.signal);
  private failure: ((err: unknown) => void) | undefined;

  constructor(
    private readonly source: TreeSource,
    private readonly filter: TreeFilter,
    private readonly call: ServerCall,
    private readonly unreadable: UnreadablePolicy,
  ) {}

  async run(): Promise<void> {
    const { signal } = this.controller;
    const onCallAbort = () => this.controller.abort(new PeerError(`${this.call.method}: the call was cancelled`));
    if (this.call.signal.aborted) onCallAbort();
    this.call.signal.addEventListener("abort", onCallAbort, { once: true });

    const failed = new Promise<never>((_, reject) => {
      this.failure = reject;
    });
    failed.catch(() => {});
    // Aborting rejects whatever waits (a full call, a listing).
    const onAbort = () => this.failure?.(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
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
      signal.removeEventListener("abort", onAbort);
      this.controller.abort(err);
      if (own) this.sendError(err);
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.call.signal.removeEventListener("abort", onCallAbort);
      if (!signal.aborted) this.controller.abort(new Error("transfer over"));
    }
  }

  private fail(err: unknown): void {
    this.failure?.(err);
  }

  /** Every kept entry as a STAT, then the end-of-listing STAT. */
  private async sendListing(): Promise<void> {
    const { signal } = this.controller;
    let id = 0;
    let turnStarted = performance.now();
    for await (const entries of walkTree(this.source, this.filter, signal, this.unreadable)) {
      for (const entry of entries) {
        // Registered before the STAT goes out: the daemon may ask at once.
        if (isRegularGoMode(entry.mode)) {
          this.requestablePaths[id] = entry.path;
          this.requestableSizes[id] = entry.size;
        }
        id++;
        writeStat(this.batch, entry);
      }
      if (this.batch.byteLength >= FLUSH_BYTES) await this.flush();
      else this.scheduleFlush();
      if (performance.now() - turnStarted > MAX_TURN_MS) {
        await nextTurn(undefined, { signal });
        turnStarted = performance.now();
      }
    }
    writeEndOfListing(this.batch);
    await this.flush();
  }

  /** Reads the daemon's packets until FIN (answered) or a failure. */
  private async receive(): Promise<void> {
    for await (const messages of this.call.messageBatches()) {
      for (const message of messages) {
        const packet = readPacket(message);
        switch (packet.type) {
          case PacketType.REQ:
            this.request(packet.id);
            break;
          case PacketType.FIN:
            writeControl(this.batch, PacketType.FIN);
            await this.flush();
            return;
          case PacketType.ERR:
            throw new PeerError(`error from receiver: ${Buffer.from(packet.data).toString("utf8")}`);
          default:
            // STAT/DATA never come from a receiver; Go ignores them too.
            break;
        }
      }
    }
    throw new PeerError(`${this.call.method}: the daemon closed the stream before FIN`);
  }

  private request(id: number): void {
    const path = this.requestablePaths[id];
    if (path === undefined) throw new Error(`invalid file id ${id}`);
    this.requestablePaths[id] = undefined; // a second REQ for it is invalid too
    this.queue.push(id);
    this.queuePaths.push(path);
    this.startFiles();
  }

  private startFiles(): void {
    // Nothing new is read while the call is full: what is in flight is the bound.
    while (this.inFlight < MAX_FILES_IN_FLIGHT && this.queueHead < this.queue.length && !this.congested && !this.controller.signal.aborted) {
      const id = this.queue[this.queueHead]!;
      const job: FileJob = { id, path: this.queuePaths[this.queueHead]!, size: this.requestableSizes[id]! };
      const reserved = Math.min(job.size + 1, MAX_BYTES_IN_FLIGHT);
      if (this.inFlight > 0 && this.bytesInFlight + reserved > MAX_BYTES_IN_FLIGHT) break;
      this.queueHead++;
      if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.queueHead);
        this.queuePaths = this.queuePaths.slice(this.queueHead);
        this.queueHead = 0;
      }
      this.inFlight++;
      this.bytesInFlight += reserved;
      this.sendFile(job).then(
        () => {
          this.inFlight--;
          this.bytesInFlight -= reserved;
          this.startFiles();
          if (this.inFlight === 0 && this.queueHead === this.queue.length) for (const wake of this.idleWaiters.splice(0)) wake();
        },
        (err: unknown) => this.fail(err),
      );
    }
  }

  private filesIdle(): Promise<void> {
    if (this.inFlight === 0 && this.queueHead === this.queue.length) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * DATA chunks, then the empty DATA that ends the file. The end is sent
   * alone for a file gone since the listing (as Go does) and for one that
   * cannot be read, if the unreadable policy lets the transfer go on.
   */
  private async sendFile(job: FileJob): Promise<void> {
    let content: AsyncIterable<Uint8Array> | undefined;
    try {
      content = await this.source.open(job.path, job.size, this.pool);
    } catch (err) {
      if (isUnreadable(err)) this.unreadable.report(job.path, "file", err);
      else log(`${this.source.description}: ${job.path} is gone since it was listed, sending it empty`);
    }
    if (content) {
      for await (const chunk of content) {
        for (let offset = 0; offset < chunk.byteLength; offset += DATA_CHUNK_SIZE) {
          writeData(this.batch, job.id, chunk.subarray(offset, offset + DATA_CHUNK_SIZE));
        }
        this.batchReads.push(chunk);
        if (this.batch.byteLength >= FLUSH_BYTES) await this.flush();
        this.controller.signal.throwIfAborted();
      }
    }
    writeData(this.batch, job.id, EMPTY);
    this.scheduleFlush();
  }

  /** Writes the batch at the end of this turn of the event loop, with whatever else the turn adds to it. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush().catch((err: unknown) => this.fail(err));
    });
  }

  /**
   * Writes what the batch holds; resolves when the call takes more (at once
   * unless it is full), rejects when the transfer is aborted first. While the
   * call is full the batch is kept, and written whole when it drains.
   */
  private flush(): Promise<void> {
    const { signal } = this.controller;
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.congested) return this.congested;
    if (this.batch.messages === 0) return Promise.resolve();
    const reads = this.batchReads;
    this.batchReads = [];
    const written = this.call.write(this.batch.take(), reads.length === 0 ? undefined : () => reads.forEach((chunk) => this.pool.release(chunk)));
    if (!written) return Promise.resolve();
    // One abort listener per wait for a full call, not per packet.
    const wait = raceAbort(written, signal, () => signal.reason);
    this.congested = wait;
    wait.then(
      () => {
        this.congested = undefined;
        if (this.batch.messages > 0) this.flush().catch((err: unknown) => this.fail(err));
        this.startFiles();
      },
      () => {}, // whoever waits sees it
    );
    return wait;
  }

  /**
   * Tells the daemon why we stop ("error from sender: …" on its side). Not
   * awaited: the packet is queued before the call's trailers either way, and
   * a daemon that stopped reading must not keep the handler from ending.
   */
  private sendError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const batch = new MessageBatch();
    writeControl(batch, PacketType.ERR, message);
    this.call.write(batch.take())?.catch((sendErr: unknown) => {
      log(`could not send ERR (${message}): ${sendErr instanceof Error ? sendErr.message : String(sendErr)}`);
    });
  }
}
