import type { FileHandle } from "node:fs/promises";

/** Writes all of `data` at the handle's current position (a write may be short). */
export async function writeFully(handle: FileHandle, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset);
    offset += bytesWritten;
  }
}
