// The order fsutil sends a tree in, which the daemon checks strictly
// ("changes out of order"): depth-first, pre-order, children in UTF-8 byte
// order, every parent before anything inside it.
import { BuildKitNodeError } from "../../errors.js";
import { isDirectory } from "./entry-tree.js";
import type { TreeFilter } from "./tree-filter.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";

/**
 * The entries to send, in order. A directory the filter does not keep but
 * looks into is yielded only when something inside it is, just before that
 * first entry (with any such ancestors, outermost first).
 */
export async function* walkTree(source: TreeSource, filter: TreeFilter, signal: AbortSignal): AsyncGenerator<TreeEntry> {
  // Explored directories not sent yet, outermost first.
  const pending: TreeEntry[] = [];

  async function* walkDir(dir: string, explored: boolean): AsyncGenerator<TreeEntry> {
    let entries: TreeEntry[];
    try {
      entries = await source.list(dir);
    } catch (err) {
      // Like fsutil: an unreadable directory nobody asked for is passed over.
      if (explored && err instanceof BuildKitNodeError && err.code === "PERMISSION_DENIED") return;
      throw err;
    }
    for (const entry of entries) {
      signal.throwIfAborted();
      const isDir = isDirectory(entry);
      const verdict = filter.classify(entry.path, isDir);
      if (verdict === "skip") continue;
      if (verdict === "keep") {
        yield* pending.splice(0);
        yield entry;
        if (isDir) yield* walkDir(entry.path, false);
      } else {
        pending.push(entry);
        yield* walkDir(entry.path, true);
        // Still pending: nothing inside was sent.
        if (pending[pending.length - 1] === entry) pending.pop();
      }
    }
  }

  yield* walkDir("", false);
}
