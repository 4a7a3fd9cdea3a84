// HPACK (RFC 7541), the part a session server needs: decoding the daemon's
// request headers (static and dynamic tables, Huffman strings), and encoding
// our few response headers and trailers as literals that touch no table.
//
// The Huffman code is canonical: each symbol's code follows from the code
// lengths alone (codes of one length are consecutive in symbol order), so
// only the 257 lengths are written down here, one letter each ('A' = 5 bits).

const CODE_LENGTHS =
  "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ";
const EOS = 256;

/** For each code length: the first code, where its symbols start in `symbols`, how many there are. */
const huffman = (() => {
  const lengths = [...CODE_LENGTHS].map((c) => c.charCodeAt(0) - 65 + 5);
  const symbols = lengths.map((_, symbol) => symbol).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const firstCode = new Array<number>(31).fill(0);
  const firstIndex = new Array<number>(31).fill(0);
  const count = new Array<number>(31).fill(0);
  for (const length of lengths) count[length]!++;
  let code = 0;
  let index = 0;
  for (let length = 1; length <= 30; length++) {
    code = (code + (count[length - 1] ?? 0)) * 2;
    firstCode[length] = code;
    firstIndex[length] = index;
    index += count[length]!;
  }
  return { symbols, firstCode, firstIndex, count };
})();

function huffmanDecode(bytes: Uint8Array): string {
  const out: number[] = [];
  let code = 0;
  let length = 0;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      length++;
      const offset = code - huffman.firstCode[length]!;
      if (huffman.count[length]! > 0 && offset >= 0 && offset < huffman.count[length]!) {
        const symbol = huffman.symbols[huffman.firstIndex[length]! + offset]!;
        if (symbol === EOS) throw new HpackError("EOS in a Huffman string");
        out.push(symbol);
        code = 0;
        length = 0;
      } else if (length > 30) throw new HpackError("bad Huffman code");
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (length > 7 || code !== 2 ** length - 1) throw new HpackError("bad Huffman padding");
  return Buffer.from(out).toString("utf8");
}

/** The static table (RFC 7541 Appendix A), index 1 first. */
const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

export class HpackError extends Error {
  override name = "HpackError";
}

/** One header field as it came, in order (repeated names stay apart). */
export type HeaderField = readonly [name: string, value: string];

/**
 * Decodes header blocks of one connection (the dynamic table lives across
 * blocks). `maxTableSize` is what we announced (SETTINGS_HEADER_TABLE_SIZE);
 * `maxListSize` bounds a decoded block, counted as HTTP/2 counts it.
 */
export class HpackDecoder {
  #table: HeaderField[] = []; // newest first
  #tableSize = 0;
  #tableLimit: number;

  constructor(
    private readonly maxTableSize: number,
    private readonly maxListSize: number,
  ) {
    this.#tableLimit = maxTableSize;
  }

  decode(block: Uint8Array): HeaderField[] {
    const fields: HeaderField[] = [];
    let listSize = 0;
    let pos = 0;
    const integer = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let value = block[pos++]! & mask;
      if (value < mask) return value;
      for (let shift = 0; ; shift += 7) {
        if (pos >= block.length || shift > 28) throw new HpackError("bad integer");
        const byte = block[pos++]!;
        value += (byte & 0x7f) * 2 ** shift;
        if (byte < 0x80) return value;
      }
    };
    const string = (): string => {
      if (pos >= block.length) throw new HpackError("truncated string");
      const huffmanCoded = (block[pos]! & 0x80) !== 0;
      const length = integer(7);
      if (pos + length > block.length) throw new HpackError("truncated string");
      const bytes = block.subarray(pos, pos + length);
      pos += length;
      // Metadata values are bytes; BuildKit's are UTF-8 (patterns, paths).
      return huffmanCoded ? huffmanDecode(bytes) : Buffer.from(bytes).toString("utf8");
    };
    const lookup = (index: number): HeaderField => {
      if (index >= 1 && index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
      const field = this.#table[index - STATIC_TABLE.length - 1];
      if (!field) throw new HpackError(`no header at index ${index}`);
      return field;
    };
    while (pos < block.length) {
      const byte = block[pos]!;
      let field: HeaderField;
      if (byte & 0x80) {
        field = lookup(integer(7));
      } else if (byte & 0x40) {
        const index = integer(6);
        field = [index === 0 ? string() : lookup(index)[0], string()];
        this.#add(field);
      } else if (byte & 0x20) {
        const size = integer(5);
        if (size > this.maxTableSize) throw new HpackError(`table size ${size} over the ${this.maxTableSize} allowed`);
        this.#tableLimit = size;
        this.#evict(0);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = integer(4);
        field = [index === 0 ? string() : lookup(index)[0], string()];
      }
      listSize += field[0].length + field[1].length + 32;
      if (listSize > this.maxListSize) throw new HpackError(`header list over ${this.maxListSize} bytes`);
      fields.push(field);
    }
    return fields;
  }

  #add(field: HeaderField): void {
    const size = field[0].length + field[1].length + 32;
    this.#evict(size);
    if (size > this.#tableLimit) return; // too large for the table: it just empties it
    this.#table.unshift(field);
    this.#tableSize += size;
  }

  /** Evicts the oldest entries until `incoming` more bytes fit. */
  #evict(incoming: number): void {
    while (this.#table.length > 0 && this.#tableSize + incoming > this.#tableLimit) {
      const [name, value] = this.#table.pop()!;
      this.#tableSize -= name.length + value.length + 32;
    }
  }
}

/**
 * A header block of literals without indexing (no state shared with the
 * peer's decoder); `:status: 200` as its static index.
 */
export function encodeHeaders(fields: readonly HeaderField[]): Buffer {
  const parts: number[] = [];
  const integer = (value: number, prefixBits: number, firstByte: number) => {
    const mask = (1 << prefixBits) - 1;
    if (value < mask) return void parts.push(firstByte | value);
    parts.push(firstByte | mask);
    value -= mask;
    while (value >= 0x80) {
      parts.push((value & 0x7f) | 0x80);
      value = Math.floor(value / 0x80);
    }
    parts.push(value);
  };
  const string = (value: string) => {
    const bytes = Buffer.from(value, "utf8");
    integer(bytes.length, 7, 0x00);
    for (const byte of bytes) parts.push(byte);
  };
  for (const [name, value] of fields) {
    if (name === ":status" && value === "200") {
      parts.push(0x88);
      continue;
    }
    const index = STATIC_TABLE.findIndex(([staticName]) => staticName === name);
    if (index >= 0) integer(index + 1, 4, 0x00);
    else {
      parts.push(0x00);
      string(name);
    }
    string(value);
  }
  return Buffer.from(parts);
}
