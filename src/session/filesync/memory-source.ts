// A tree of files held in memory (generated Dockerfiles, small contexts).
import { createHash } from "node:crypto";
import { BuildKitNodeError } from "../../errors.js";
import { EntryTree } from "./entry-tree.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";
import { rootedComponents } from "./tree-path.js";

export interface MemorySourceOptions {
  /**
   * Modification time of every entry, ns since the epoch. By default a
   * directory's is 0 and a file's comes from its content: the same files
   * always give the same entries (and cache keys), and a changed file never
   * looks unchanged to the daemon, which re-requests only files whose size or
   * time differ from its last upload under the session's key.
   */
  modTimeNs?: bigint;
}

const CHUNK_SIZE = 32 * 1024;

/**
 * Files by path (`"src/index.ts"`; text is written as UTF-8), mode 0644,
 * their parent directories implied (0755). Paths may not be empty, absolute
 * or contain `..`, and a path may not be both a file and a directory.
 */
export function memorySource(files: Record<string, string | Uint8Array>, options: MemorySourceOptions = {}): TreeSource {
  const tree = new EntryTree<Uint8Array>(options.modTimeNs ?? 0n);
  const seen = new Set<string>();
  for (const [name, value] of Object.entries(files)) {
    const what = `file ${JSON.stringify(name)}`;
    const components = rootedComponents(name, what);
    if (components.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: empty path`);
    const path = components.join("/");
    if (seen.has(path)) throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: ${path} is given twice`);
    seen.add(path);
    const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value;
    const existing = tree.find(components);
    if (existing?.children) throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: ${path} is also a directory of other files`);
    const modTimeNs = options.modTimeNs ?? contentTime(bytes);
    tree.put(components, { mode: 0o644, size: bytes.byteLength, modTimeNs, linkname: "", uid: 0, gid: 0 }, bytes, what);
  }

  return {
    description: "in-memory files",
    async list(dir: string): Promise<TreeEntry[]> {
      return tree.list(dir);
    },
    async stat(path: string): Promise<TreeEntry | undefined> {
      return tree.get(path)?.entry;
    },
    open(path: string): AsyncIterable<Uint8Array> {
      const bytes = tree.get(path)?.content;
      if (!bytes) throw new BuildKitNodeError("NOT_FOUND", `in-memory files: no file ${path}`);
      return chunksOf(bytes);
    },
    async close(): Promise<void> {},
  };
}

/** A time that follows the content: 48 bits of its SHA-256, as ns (a moment in January 1970). */
function contentTime(bytes: Uint8Array): bigint {
  return createHash("sha256").update(bytes).digest().readBigUInt64BE(0) >> 16n;
}

async function* chunksOf(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.byteLength; offset += CHUNK_SIZE) yield bytes.subarray(offset, offset + CHUNK_SIZE);
}
