import { Duplex } from "node:stream";

/**
 * A Duplex standing in for a byte stream that is not there yet.
 *
 * HTTP/2 wants its connection synchronously (`createConnection`), but a
 * re-dial is asynchronous (a TLS handshake, dockerd's HTTP/1.1 upgrade). The
 * relay accepts writes at once and holds them until the target is there.
 */
export class StreamRelay extends Duplex {
  #target: Duplex | undefined;
  readonly #ready: Promise<Duplex>;

  constructor(target: Promise<Duplex>) {
    super({ allowHalfOpen: true });
    this.#ready = target.then(
      (stream) => this.#attach(stream),
      (err: unknown) => {
        this.destroy(err instanceof Error ? err : new Error(String(err)));
        throw err;
      },
    );
    this.#ready.catch(() => {}); // surfaced through destroy()
  }

  #attach(stream: Duplex): Duplex {
    if (this.destroyed) {
      stream.destroy();
      return stream;
    }
    this.#target = stream;
    stream.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) stream.pause();
    });
    stream.on("end", () => this.push(null));
    stream.on("error", (err) => this.destroy(err));
    stream.on("close", () => {
      if (!this.readableEnded && !this.destroyed) this.destroy(new Error("connection closed"));
    });
    return stream;
  }

  override _read(): void {
    this.#target?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const target = this.#target;
    if (!target) {
      this.#ready.then(() => this._write(chunk, _encoding, callback), callback);
      return;
    }
    if (target.write(chunk)) callback();
    else target.once("drain", () => callback());
  }

  /** HTTP/2 writes each frame in pieces: pass a batch on as one write. */
  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    this._write(Buffer.concat(chunks.map((c) => c.chunk)), "binary", callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#ready.then((target) => target.end(() => callback()), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#target?.destroy();
    callback(err);
  }
}
