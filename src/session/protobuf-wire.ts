// Protobuf's wire format, for the few messages the upload path encodes or
// reads by hand (fsutil packets, the session tunnel's BytesMessage) instead
// of going through generated message objects.

/** A message's bytes are not protobuf. */
export class ProtobufWireError extends Error {
  override name = "ProtobufWireError";
}

/** Writes `value` (a non-negative integer below 2^53) as a varint at `offset`; returns the offset after it. */
export function writeVarint(target: Uint8Array, offset: number, value: number): number {
  while (value > 0x7f) {
    target[offset++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 0x80);
  }
  target[offset++] = value;
  return offset;
}

/** Bytes `value` (as for writeVarint) takes as a varint. */
export function varintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    size++;
  }
  return size;
}

/**
 * Walks the fields of `message`: a varint field's value goes to `onVarint`,
 * a length-delimited one's bytes (a view of `message`) to `onBytes`, and
 * fixed-width fields are skipped. Varints past 2^53 lose precision (no field
 * read this way is that large). Throws ProtobufWireError on bytes that are
 * not a protobuf message.
 */
export function readFields(
  message: Uint8Array,
  onVarint: (fieldNumber: number, value: number) => void,
  onBytes: (fieldNumber: number, bytes: Uint8Array) => void,
): void {
  let pos = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (pos >= message.length) break;
      const byte = message[pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    throw new ProtobufWireError("truncated varint");
  };
  while (pos < message.length) {
    const tag = varint();
    const wireType = tag % 8;
    const fieldNumber = Math.floor(tag / 8);
    if (wireType === 0) onVarint(fieldNumber, varint());
    else if (wireType === 2) {
      const length = varint();
      if (pos + length > message.length) throw new ProtobufWireError("truncated field");
      onBytes(fieldNumber, message.subarray(pos, pos + length));
      pos += length;
    } else if (wireType === 1) pos += 8;
    else if (wireType === 5) pos += 4;
    else throw new ProtobufWireError(`wire type ${wireType}`);
    if (pos > message.length) throw new ProtobufWireError("truncated field");
  }
}
