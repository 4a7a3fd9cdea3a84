/**
 * The SSH wire encoding (RFC 4251 §5) that SSH keys and the agent protocol
 * are written in: uint32 big-endian, length-prefixed strings, and mpints
 * (two's-complement big-endian integers; ours are never negative).
 */

export function sshUint32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

export function sshString(value: string | Uint8Array): Buffer {
  const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return Buffer.concat([sshUint32(bytes.length), bytes]);
}

/** A non-negative integer given as unsigned big-endian bytes. */
export function sshMpint(unsigned: Uint8Array): Buffer {
  let start = 0;
  while (start < unsigned.length && unsigned[start] === 0) start++;
  const digits = Buffer.from(unsigned.subarray(start));
  // A set high bit would read as negative: prefix a zero byte.
  const body = digits.length > 0 && digits[0]! & 0x80 ? Buffer.concat([Buffer.of(0), digits]) : digits;
  return sshString(body);
}

/** Thrown for truncated or inconsistent input; the message never quotes the bytes. */
export class SshFormatError extends Error {
  override name = "SshFormatError";
}

/** Reads SSH-encoded fields in order. */
export class SshReader {
  private offset = 0;

  constructor(private readonly bytes: Buffer) {}

  get remaining(): number {
    return this.bytes.length - this.offset;
  }

  uint32(): number {
    this.need(4);
    const value = this.bytes.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  bytesOf(length: number): Buffer {
    this.need(length);
    const value = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return value;
  }

  string(): Buffer {
    return this.bytesOf(this.uint32());
  }

  text(): string {
    return this.string().toString("utf8");
  }

  /** An mpint as unsigned big-endian bytes without leading zeros. */
  mpint(): Buffer {
    const raw = this.string();
    if (raw.length > 0 && raw[0]! & 0x80) throw new SshFormatError("negative mpint");
    let start = 0;
    while (start < raw.length && raw[start] === 0) start++;
    return raw.subarray(start);
  }

  private need(length: number): void {
    if (length > this.remaining) throw new SshFormatError("truncated SSH data");
  }
}
