import { Duplex } from "node:stream";

/**
 * A Duplex standing in for a byte stream that is not usable yet, or that
 * must be read from a given prefix first.
 *
 * HTTP/2 wants a Duplex synchronously (`createConnection`), but dockerd's
 * `/grpc` socket exists only after an asynchronous HTTP/1.1 upgrade, and the
 * bytes that arrived with the `101` response (`head`) belong to the HTTP/2
 * stream. The relay accepts writes at once, holds them until the target is
 * there, and replays the prefix before the target's own bytes.
 */
export class StreamRelay extends Duplex {
  #target: Duplex | undefined;
  readonly #ready: Promise<Duplex>;

  constructor(target: Duplex | Promise<Duplex>, prefix?: Uint8Array) {
    super({ allowHalfOpen: true });
    if (prefix && prefix.length > 0) this.push(prefix);
    this.#ready = Promise.resolve(target).then(
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

  override _final(callback: (err?: Error | null) => void): void {
    this.#ready.then((target) => target.end(() => callback()), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#target?.destroy();
    callback(err);
  }
}
