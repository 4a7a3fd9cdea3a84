// The server side of one HTTP/2 connection (RFC 9113), for the build
// session: the daemon dials in (inside the Control.Session tunnel) and calls
// our gRPC services. Written here rather than taken from node:http2 because
// node:http2 can only run over a JS stream through a wrapper that copies
// every write and lets one write be in flight per turn of the event loop;
// here DATA frames are a 9-byte header in front of the caller's own buffers,
// written to the tunnel as they are.
//
// What it does: the preface and SETTINGS exchange, HPACK request headers,
// DATA both ways under both flow-control windows, PING answers, RST_STREAM
// and GOAWAY from the peer. What it never does: push, priorities (ignored),
// GOAWAY of its own except on a protocol error (the daemon cannot redial a
// session, so nothing idle or graceful closes it).
import type { Duplex } from "node:stream";
import { ChunkQueue } from "../chunk-queue.js";
import { encodeHeaders, type HeaderField, HpackDecoder, HpackError } from "./hpack.js";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

const FrameType = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;
const Setting = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;

/** HTTP/2 error codes. */
const H2Code = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, STREAM_CLOSED: 5, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const;

const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** What we let the daemon send ahead per stream (FileSend exports stream megabytes). */
const STREAM_WINDOW = 4 * 1024 * 1024;
/** And on the whole connection. */
const CONNECTION_WINDOW = 16 * 1024 * 1024;
/** Frames we accept (our SETTINGS_MAX_FRAME_SIZE is the default). */
const MAX_FRAME_SIZE = 16_384;
const HEADER_TABLE_SIZE = 4096;
/** A call's headers at most: BuildKit sends a .dockerignore's patterns as metadata (gRPC servers take up to 16 MiB). */
const MAX_HEADER_LIST_SIZE = 4 * 1024 * 1024;
/**
 * Frames one header block may take: the largest block in full frames, twice
 * over. Without a bound, empty CONTINUATION frames would pile up forever
 * (the "CONTINUATION flood").
 */
const MAX_HEADER_BLOCK_FRAMES = 2 * Math.ceil(MAX_HEADER_LIST_SIZE / MAX_FRAME_SIZE);
/** Bytes a stream may queue before its writer is asked to wait. */
const STREAM_WRITE_HIGH_WATER = 1024 * 1024;
/**
 * Answers to the peer's own frames (PING and SETTINGS acks, refused streams)
 * we queue while it does not read what we write: past this, it is flooding
 * us, and each answer would otherwise be held in memory until it reads.
 */
const MAX_ANSWERS_UNREAD = 10_000;

class Http2ProtocolError extends Error {
  override name = "Http2ProtocolError";
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** One request the peer opened. */
export interface ServerStream {
  readonly id: number;
  /** The request's header fields in order, pseudo-headers included. */
  readonly headers: readonly HeaderField[];
  /**
   * The request body's DATA payloads as they come; ends at the peer's
   * END_STREAM, throws StreamResetError if the peer resets the stream or the
   * connection is lost. Credit is returned to the peer as payloads are taken.
   */
  readonly body: AsyncIterable<Buffer>;
  /** Aborted when the stream is reset (either way) or the connection ends. */
  readonly signal: AbortSignal;
  /** Sends the response headers (once, before any data). */
  respond(headers: readonly HeaderField[]): void;
  /**
   * Queues `chunks` as DATA, sent as the peer's windows allow. Undefined when
   * more may be written at once; else a promise that settles when the queue
   * is short again (rejects if the stream ends first). `onSent` is called
   * once the connection has sent them (or they were dropped with the
   * stream): the chunks may be reused from then on.
   */
  write(chunks: readonly Uint8Array[], onSent?: () => void): Promise<void> | undefined;
  /** Ends the response with trailers, after the queued data. */
  end(trailers: readonly HeaderField[]): void;
  /** Resets the stream (RST_STREAM). */
  reset(code: number): void;
  /** Drops what the peer sends from now on (crediting it back): the body will not be read. */
  discardBody(): void;
}

export class StreamResetError extends Error {
  override name = "StreamResetError";
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

interface OutgoingItem {
  /** DATA payload pieces still to send (front first). */
  data: Uint8Array[];
  dataBytes: number;
  /** Bytes ever queued, and ever cut into frames. */
  queuedTotal: number;
  framedTotal: number;
  /** Callbacks due once the bytes up to `at` are sent, in order. */
  sentMarkers: Array<{ at: number; onSent: () => void }>;
}

class StreamState implements ServerStream {
  readonly controller = new AbortController();
  readonly signal: AbortSignal = this.controller.signal;
  // Inbound.
  readonly received: Buffer[] = [];
  receivedEnded = false;
  discarding = false;
  resetError: StreamResetError | undefined;
  wakeReader: (() => void) | undefined;
  /** Bytes taken by the reader not yet credited back to the peer's stream window. */
  unackedBytes = 0;
  /** What the peer may still send on this stream before we credit more (we announced STREAM_WINDOW). */
  receiveWindow = STREAM_WINDOW;
  // Outbound.
  sendWindow: number;
  readonly outgoing: OutgoingItem = { data: [], dataBytes: 0, queuedTotal: 0, framedTotal: 0, sentMarkers: [] };
  trailers: readonly HeaderField[] | undefined;
  responded = false;
  closedLocal = false;
  closedRemote = false;
  drained: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(
    readonly id: number,
    readonly headers: readonly HeaderField[],
    private readonly connection: Http2ServerConnection,
    sendWindow: number,
  ) {
    this.sendWindow = sendWindow;
  }

  get body(): AsyncIterable<Buffer> {
    return { [Symbol.asyncIterator]: () => this.#reader() };
  }

  async *#reader(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.received.length > 0) {
        const chunk = this.received.shift()!;
        this.connection.credit(this, chunk.length);
        yield chunk;
        continue;
      }
      if (this.resetError) throw this.resetError;
      if (this.receivedEnded) return;
      await new Promise<void>((resolve) => (this.wakeReader = resolve));
      this.wakeReader = undefined;
    }
  }

  respond(headers: readonly HeaderField[]): void {
    if (this.responded || this.closedLocal) return;
    this.responded = true;
    this.connection.sendHeaders(this, headers, false);
  }

  write(chunks: readonly Uint8Array[], onSent?: () => void): Promise<void> | undefined {
    if (this.closedLocal || this.resetError) {
      onSent?.();
      return Promise.reject(new Error("the call is closed"));
    }
    const out = this.outgoing;
    for (const chunk of chunks) {
      if (chunk.byteLength === 0) continue;
      out.data.push(chunk);
      out.dataBytes += chunk.byteLength;
      out.queuedTotal += chunk.byteLength;
    }
    if (onSent) out.sentMarkers.push({ at: out.queuedTotal, onSent });
    this.connection.schedule(this);
    if (this.outgoing.dataBytes < STREAM_WRITE_HIGH_WATER) return undefined;
    if (!this.drained) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      promise.catch(() => {});
      this.drained = { promise, resolve, reject };
    }
    return this.drained.promise;
  }

  end(trailers: readonly HeaderField[]): void {
    if (this.closedLocal || this.trailers) return;
    this.trailers = trailers;
    this.connection.schedule(this);
  }

  reset(code: number): void {
    this.connection.resetStream(this, code, true);
  }

  discardBody(): void {
    this.discarding = true;
    const unread = this.received.splice(0);
    for (const chunk of unread) this.connection.credit(this, chunk.length);
  }

  /** Called as the queue shrinks. */
  checkDrained(): void {
    if (this.drained && this.outgoing.dataBytes < STREAM_WRITE_HIGH_WATER / 2) {
      const { resolve } = this.drained;
      this.drained = undefined;
      resolve();
    }
  }

  /** The stream is over for us: wake whoever waits. */
  terminate(error: StreamResetError | undefined): void {
    if (error && !this.resetError && !this.receivedEnded) this.resetError = error;
    this.closedLocal = true;
    this.outgoing.data = [];
    this.outgoing.dataBytes = 0;
    // Dropped, never to be sent: their buffers are free.
    for (const { onSent } of this.outgoing.sentMarkers.splice(0)) onSent();
    if (this.drained) {
      this.drained.reject(new Error("the call closed while sending"));
      this.drained = undefined;
    }
    this.wakeReader?.();
    if (!this.signal.aborted) this.controller.abort(error ?? new Error("the call is over"));
  }
}

export interface Http2ServerOptions {
  onStream(stream: ServerStream): void;
  /** The connection failed (a protocol error of the peer, or the transport's). */
  onError?(err: Error): void;
}

/**
 * Serves HTTP/2 on `connection`, where the peer is the client. close()
 * destroys the connection (no GOAWAY: the session is over anyway).
 */
export class Http2ServerConnection {
  readonly #connection: Duplex;
  readonly #options: Http2ServerOptions;
  readonly #streams = new Map<number, StreamState>();
  readonly #decoder = new HpackDecoder(HEADER_TABLE_SIZE, MAX_HEADER_LIST_SIZE);
  // Inbound parsing.
  readonly #inbound = new ChunkQueue();
  #prefaceSeen = false;
  /** A header block being continued: its stream, flags and fragments. */
  #continuing: { streamId: number; endStream: boolean; fragments: Buffer[]; size: number } | undefined;
  #lastStreamId = 0;
  #goingAway = false;
  // Peer settings.
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrameSize = 16_384;
  #connectionSendWindow = DEFAULT_WINDOW;
  // Our receive side: bytes the peer sent that were taken (or dropped) and not yet credited back,
  // and what it may still send on the connection before we credit more.
  #connectionToCredit = 0;
  #connectionReceiveWindow = CONNECTION_WINDOW;
  // Output.
  #ready = new Set<StreamState>();
  #flushScheduled = false;
  #blocked = false;
  #answersWhileBlocked = 0;
  #closed = false;

  constructor(connection: Duplex, options: Http2ServerOptions) {
    this.#connection = connection;
    this.#options = options;
    connection.on("data", (chunk: Buffer) => this.#receive(chunk));
    connection.on("end", () => this.#fail(new Error("the peer closed the connection")));
    connection.on("error", (err) => this.#fail(err));
    connection.on("close", () => this.#fail(new Error("the connection closed")));
    connection.on("drain", () => {
      this.#blocked = false;
      this.#answersWhileBlocked = 0;
      this.#flush();
    });
    // Our preface: SETTINGS, then room for the daemon to send ahead on the whole connection.
    this.#writeFrame(FrameType.SETTINGS, 0, 0, settingsPayload([[Setting.ENABLE_PUSH, 0], [Setting.INITIAL_WINDOW_SIZE, STREAM_WINDOW]]));
    this.#writeFrame(FrameType.WINDOW_UPDATE, 0, 0, uint32(CONNECTION_WINDOW - DEFAULT_WINDOW));
  }

  close(): void {
    if (this.#closed) return;
    this.#fail(new Error("the session closed"));
    this.#connection.destroy();
  }

  // ─── inbound ──────────────────────────────────────────────────────────────

  #receive(chunk: Buffer): void {
    if (this.#closed) return;
    const inbound = this.#inbound;
    inbound.push(chunk);
    try {
      if (!this.#prefaceSeen) {
        if (inbound.length < PREFACE.length) return;
        if (!inbound.take(PREFACE.length).equals(PREFACE)) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "not an HTTP/2 client preface");
        this.#prefaceSeen = true;
      }
      while (inbound.length >= 9 && !this.#closed) {
        const header = inbound.peek(9);
        const length = header.readUIntBE(0, 3);
        if (length > MAX_FRAME_SIZE) throw new Http2ProtocolError(H2Code.FRAME_SIZE_ERROR, `a frame of ${length} bytes`);
        if (inbound.length < 9 + length) break;
        inbound.take(9);
        const payload = inbound.take(length);
        this.#frame(header[3]!, header[4]!, header.readUInt32BE(5) & 0x7fff_ffff, payload);
      }
    } catch (err) {
      this.#protocolError(err);
    }
    this.#flush();
  }

  #frame(type: number, flags: number, streamId: number, payload: Buffer): void {
    if (this.#continuing && type !== FrameType.CONTINUATION) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "a header block was interrupted");
    switch (type) {
      case FrameType.DATA:
        return this.#data(flags, streamId, payload);
      case FrameType.HEADERS:
        return this.#headers(flags, streamId, payload);
      case FrameType.CONTINUATION:
        return this.#continuation(flags, streamId, payload);
      case FrameType.RST_STREAM: {
        if (payload.length !== 4) throw new Http2ProtocolError(H2Code.FRAME_SIZE_ERROR, "RST_STREAM of a wrong size");
        const stream = this.#streams.get(streamId);
        if (stream) this.resetStream(stream, payload.readUInt32BE(0), false);
        return;
      }
      case FrameType.SETTINGS:
        return this.#settings(flags, streamId, payload);
      case FrameType.PING:
        if (payload.length !== 8) throw new Http2ProtocolError(H2Code.FRAME_SIZE_ERROR, "PING of a wrong size");
        // Answered at once: the daemon's flow control measures the round trip with it.
        if (!(flags & Flag.ACK)) this.#answer(FrameType.PING, Flag.ACK, 0, payload);
        return;
      case FrameType.GOAWAY:
        // No new calls will come; those open go on.
        this.#goingAway = true;
        return;
      case FrameType.WINDOW_UPDATE:
        return this.#windowUpdate(streamId, payload);
      case FrameType.PUSH_PROMISE:
        throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      default:
        return; // PRIORITY and unknown frames are ignored
    }
  }

  #data(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "DATA on stream 0");
    const data = unpad(flags, payload);
    // A peer that sends past the windows we gave would have us buffer without bound.
    this.#connectionReceiveWindow -= payload.length;
    if (this.#connectionReceiveWindow < 0) throw new Http2ProtocolError(H2Code.FLOW_CONTROL_ERROR, "DATA beyond the connection's window");
    const stream = this.#streams.get(streamId);
    if (!stream || stream.closedRemote) {
      // A stream we reset or ended: its bytes still counted against the connection's window.
      this.#connectionToCredit += payload.length;
      this.#creditConnection();
      return;
    }
    stream.receiveWindow -= payload.length;
    if (stream.receiveWindow < 0) {
      this.#connectionToCredit += payload.length;
      return this.resetStream(stream, H2Code.FLOW_CONTROL_ERROR, true);
    }
    // Flow control counts padding too; it is credited back at once.
    const padding = payload.length - data.length;
    if (padding > 0) this.credit(stream, padding);
    if (data.length > 0) {
      if (stream.discarding) this.credit(stream, data.length);
      else stream.received.push(data);
    }
    if (flags & Flag.END_STREAM) this.#endRemote(stream);
    stream.wakeReader?.();
  }

  #headers(flags: number, streamId: number, payload: Buffer): void {
    if (streamId === 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "HEADERS on stream 0");
    let fragment = unpad(flags, payload);
    if (flags & Flag.PRIORITY) fragment = fragment.subarray(5);
    this.#continuing = { streamId, endStream: (flags & Flag.END_STREAM) !== 0, fragments: [fragment], size: fragment.length };
    if (flags & Flag.END_HEADERS) this.#headerBlockDone();
  }

  #continuation(flags: number, streamId: number, payload: Buffer): void {
    const continuing = this.#continuing;
    if (!continuing || continuing.streamId !== streamId) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "CONTINUATION without HEADERS");
    continuing.fragments.push(payload);
    continuing.size += payload.length;
    if (continuing.size > MAX_HEADER_LIST_SIZE || continuing.fragments.length > MAX_HEADER_BLOCK_FRAMES) {
      throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "a header block too large");
    }
    if (flags & Flag.END_HEADERS) this.#headerBlockDone();
  }

  #headerBlockDone(): void {
    const { streamId, endStream, fragments } = this.#continuing!;
    this.#continuing = undefined;
    let fields: HeaderField[];
    try {
      fields = this.#decoder.decode(fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments));
    } catch (err) {
      if (err instanceof HpackError) throw new Http2ProtocolError(H2Code.COMPRESSION_ERROR, err.message);
      throw err;
    }
    const existing = this.#streams.get(streamId);
    if (existing) {
      // Trailers from the client: only an end of stream matters.
      if (endStream) this.#endRemote(existing);
      existing.wakeReader?.();
      return;
    }
    if (streamId % 2 === 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, `a client stream with the even id ${streamId}`);
    // A stream already over (one we reset, say) or an id gone backwards: the headers were decoded for the
    // table's sake, and the stream is refused as closed, so that a peer waiting on it hears why.
    if (streamId <= this.#lastStreamId) return this.#answer(FrameType.RST_STREAM, 0, streamId, uint32(H2Code.STREAM_CLOSED));
    this.#lastStreamId = streamId;
    if (this.#goingAway) return this.#answer(FrameType.RST_STREAM, 0, streamId, uint32(H2Code.REFUSED_STREAM));
    const stream = new StreamState(streamId, fields, this, this.#peerInitialWindow);
    this.#streams.set(streamId, stream);
    if (endStream) this.#endRemote(stream);
    this.#options.onStream(stream);
  }

  #settings(flags: number, streamId: number, payload: Buffer): void {
    if (streamId !== 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & Flag.ACK) return;
    if (payload.length % 6 !== 0) throw new Http2ProtocolError(H2Code.FRAME_SIZE_ERROR, "SETTINGS of a wrong size");
    for (let i = 0; i < payload.length; i += 6) {
      const id = payload.readUInt16BE(i);
      const value = payload.readUInt32BE(i + 2);
      if (id === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new Http2ProtocolError(H2Code.FLOW_CONTROL_ERROR, "initial window too large");
        const delta = value - this.#peerInitialWindow;
        this.#peerInitialWindow = value;
        // Open streams' windows move by the change (RFC 9113 §6.9.2): below zero they wait for WINDOW_UPDATEs.
        for (const stream of this.#streams.values()) {
          stream.sendWindow += delta;
          if (stream.sendWindow > MAX_WINDOW) throw new Http2ProtocolError(H2Code.FLOW_CONTROL_ERROR, "a stream's window overflowed with the new initial window");
          if (stream.sendWindow > 0) this.schedule(stream);
        }
      } else if (id === Setting.MAX_FRAME_SIZE) {
        if (value < 16_384 || value > 16_777_215) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "bad max frame size");
        this.#peerMaxFrameSize = value;
      }
      // The rest do not concern a server that encodes without the dynamic table and never pushes.
    }
    this.#answer(FrameType.SETTINGS, Flag.ACK, 0, Buffer.alloc(0));
  }

  #windowUpdate(streamId: number, payload: Buffer): void {
    if (payload.length !== 4) throw new Http2ProtocolError(H2Code.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size");
    const increment = payload.readUInt32BE(0) & 0x7fff_ffff;
    if (streamId === 0) {
      if (increment === 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "a zero window increment");
      this.#connectionSendWindow += increment;
      if (this.#connectionSendWindow > MAX_WINDOW) throw new Http2ProtocolError(H2Code.FLOW_CONTROL_ERROR, "connection window overflow");
      for (const stream of this.#streams.values()) if (stream.outgoing.dataBytes > 0 || stream.trailers) this.#ready.add(stream);
      return;
    }
    const stream = this.#streams.get(streamId);
    if (!stream) return;
    if (increment === 0) return this.resetStream(stream, H2Code.PROTOCOL_ERROR, true);
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.resetStream(stream, H2Code.FLOW_CONTROL_ERROR, true);
    this.schedule(stream);
  }

  #endRemote(stream: StreamState): void {
    stream.closedRemote = true;
    stream.receivedEnded = true;
    this.#maybeForget(stream);
  }

  /** Returns credit for `bytes` a reader took: to the stream and the connection, in batches. */
  credit(stream: StreamState, bytes: number): void {
    if (this.#closed) return;
    stream.unackedBytes += bytes;
    this.#connectionToCredit += bytes;
    if (!stream.closedRemote && stream.unackedBytes >= STREAM_WINDOW / 4) {
      this.#writeFrame(FrameType.WINDOW_UPDATE, 0, stream.id, uint32(stream.unackedBytes));
      stream.receiveWindow += stream.unackedBytes;
      stream.unackedBytes = 0;
    }
    this.#creditConnection();
  }

  #creditConnection(): void {
    if (this.#connectionToCredit < CONNECTION_WINDOW / 4) return;
    this.#writeFrame(FrameType.WINDOW_UPDATE, 0, 0, uint32(this.#connectionToCredit));
    this.#connectionReceiveWindow += this.#connectionToCredit;
    this.#connectionToCredit = 0;
  }

  // ─── outbound ─────────────────────────────────────────────────────────────

  sendHeaders(stream: StreamState, fields: readonly HeaderField[], endStream: boolean): void {
    const frames: Uint8Array[] = [];
    this.#pushHeaders(frames, stream, fields, endStream);
    this.#writeRaw(frames);
  }

  resetStream(stream: StreamState, code: number, ours: boolean): void {
    if (!this.#streams.has(stream.id)) return;
    this.#streams.delete(stream.id);
    this.#ready.delete(stream);
    // What it held unread will never be taken: the connection gets it back.
    for (const chunk of stream.received) this.#connectionToCredit += chunk.length;
    stream.received.length = 0;
    stream.closedRemote = true;
    if (ours) this.#writeFrame(FrameType.RST_STREAM, 0, stream.id, uint32(code));
    stream.terminate(new StreamResetError(code, ours ? `reset (HTTP/2 code ${code})` : `the peer reset the call (HTTP/2 code ${code})`));
    this.#creditConnection();
  }

  schedule(stream: StreamState): void {
    this.#ready.add(stream);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // Everything written in this turn of the event loop goes out together.
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Frames what the windows allow, stream by stream, then trailers of streams whose data is all out. */
  #flush(): void {
    if (this.#closed || this.#blocked) return;
    const frames: Uint8Array[] = [];
    const sent: Array<() => void> = [];
    let progress = true;
    while (progress && this.#ready.size > 0) {
      progress = false;
      for (const stream of this.#ready) {
        const out = stream.outgoing;
        if (out.dataBytes > 0) {
          const room = Math.min(this.#connectionSendWindow, stream.sendWindow, this.#peerMaxFrameSize, out.dataBytes);
          if (room <= 0) {
            if (stream.sendWindow <= 0) this.#ready.delete(stream);
            continue;
          }
          const payload = takeBytes(out, room);
          frames.push(frameHeader(room, FrameType.DATA, 0, stream.id), ...payload);
          out.framedTotal += room;
          while (out.sentMarkers.length > 0 && out.sentMarkers[0]!.at <= out.framedTotal) sent.push(out.sentMarkers.shift()!.onSent);
          stream.sendWindow -= room;
          this.#connectionSendWindow -= room;
          stream.checkDrained();
          progress = true;
        }
        if (out.dataBytes === 0) {
          this.#ready.delete(stream);
          if (stream.trailers && !stream.closedLocal) {
            if (!stream.responded) {
              stream.responded = true;
              this.#pushHeaders(frames, stream, [[":status", "200"], ...stream.trailers], true);
            } else this.#pushHeaders(frames, stream, stream.trailers, true);
            stream.closedLocal = true;
            this.#maybeForget(stream);
          }
        }
      }
    }
    if (frames.length > 0) this.#writeRaw(frames, sent);
  }

  #pushHeaders(frames: Uint8Array[], stream: StreamState, fields: readonly HeaderField[], endStream: boolean): void {
    const block = encodeHeaders(fields);
    let offset = 0;
    let type: number = FrameType.HEADERS;
    do {
      const piece = block.subarray(offset, offset + this.#peerMaxFrameSize);
      offset += piece.length;
      const flags = (offset >= block.length ? Flag.END_HEADERS : 0) | (endStream && type === FrameType.HEADERS ? Flag.END_STREAM : 0);
      frames.push(frameHeader(piece.length, type, flags, stream.id), piece);
      type = FrameType.CONTINUATION;
    } while (offset < block.length);
  }

  /** A stream closed both ways is forgotten (its late frames are then ignored). */
  #maybeForget(stream: StreamState): void {
    if (!stream.closedLocal || !stream.closedRemote) return;
    this.#streams.delete(stream.id);
    this.#ready.delete(stream);
    if (stream.received.length === 0) stream.terminate(undefined);
    else {
      // The reader still has data to take: let it, then end.
      stream.closedLocal = true;
      if (!stream.signal.aborted) stream.controller.abort(new Error("the call is over"));
    }
  }

  /** A frame the peer's own frame calls for, unless the peer keeps sending them without reading ours. */
  #answer(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    if (this.#blocked && ++this.#answersWhileBlocked > MAX_ANSWERS_UNREAD) {
      throw new Http2ProtocolError(H2Code.ENHANCE_YOUR_CALM, "too many frames to answer while the peer reads none");
    }
    this.#writeFrame(type, flags, streamId, payload);
  }

  #writeFrame(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    this.#writeRaw([frameHeader(payload.byteLength, type, flags, streamId), payload]);
  }

  /** Writes `pieces` in one go; `sent` are called when the connection has sent them (or failed). */
  #writeRaw(pieces: Uint8Array[], sent: Array<() => void> = []): void {
    if (this.#closed) {
      for (const onSent of sent) onSent();
      return;
    }
    const connection = this.#connection;
    const done = sent.length === 0 ? undefined : () => sent.forEach((onSent) => onSent());
    connection.cork();
    let ok = true;
    pieces.forEach((piece, i) => {
      if (i === pieces.length - 1) ok = connection.write(piece, done);
      else if (piece.byteLength > 0) ok = connection.write(piece);
    });
    connection.uncork();
    if (!ok) this.#blocked = true;
  }

  #protocolError(err: unknown): void {
    const code = err instanceof Http2ProtocolError ? err.code : H2Code.INTERNAL_ERROR;
    const message = err instanceof Error ? err.message : String(err);
    const payload = Buffer.alloc(8 + Buffer.byteLength(message));
    payload.writeUInt32BE(this.#lastStreamId, 0);
    payload.writeUInt32BE(code, 4);
    payload.write(message, 8);
    this.#writeFrame(FrameType.GOAWAY, 0, 0, payload);
    this.#fail(err instanceof Error ? err : new Error(message));
    this.#connection.end();
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const stream of this.#streams.values()) stream.terminate(new StreamResetError(H2Code.CANCEL, `the session connection ended: ${err.message}`));
    this.#streams.clear();
    this.#ready.clear();
    this.#options.onError?.(err);
  }
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return header;
}

function uint32(value: number): Buffer {
  const buffer = Buffer.allocUnsafe(4);
  buffer.writeUInt32BE(value, 0);
  return buffer;
}

function settingsPayload(settings: Array<[number, number]>): Buffer {
  const payload = Buffer.allocUnsafe(settings.length * 6);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return payload;
}

/** A payload without its padding. */
function unpad(flags: number, payload: Buffer): Buffer {
  if (!(flags & Flag.PADDED)) return payload;
  if (payload.length === 0) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "padded frame without a pad length");
  const pad = payload[0]!;
  if (pad >= payload.length) throw new Http2ProtocolError(H2Code.PROTOCOL_ERROR, "padding longer than the frame");
  return payload.subarray(1, payload.length - pad);
}

/** The first `n` bytes of a stream's queue, as views of its chunks. */
function takeBytes(out: OutgoingItem, n: number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let left = n;
  while (left > 0) {
    const first = out.data[0]!;
    if (first.byteLength <= left) {
      pieces.push(first);
      out.data.shift();
      left -= first.byteLength;
    } else {
      pieces.push(first.subarray(0, left));
      out.data[0] = first.subarray(left);
      left = 0;
    }
  }
  out.dataBytes -= n;
  return pieces;
}
