// The order fsutil sends a tree in, which the daemon checks strictly
// ("changes out of order"): depth-first, pre-order, children in UTF-8 byte
// order, every parent before anything inside it.
import { BuildKitNodeError } from "../../errors.js";
import { isDirectory } from "./entry-tree.js";
import type { TreeFilter } from "./tree-filter.js";
import type { UnreadablePolicy } from "./unreadable.js";
import type { TreeEntry, TreeSource } from "./tree-source.js";

/** Entries per batch at most (a batch also ends before each directory is listed). */
const BATCH_SIZE = 1024;

/** A directory being walked. */
interface Frame {
  entries: TreeEntry[];
  next: number;
  /** The directory's own entry while it is only explored (sent lazily), else undefined. */
  explored: TreeEntry | undefined;
}

/**
 * The entries to send, in order, in batches (one per directory listing at
 * most, so that nothing waits behind a slow listing). A directory the filter
 * does not keep but looks into is sent only when something inside it is,
 * just before that first entry (with any such ancestors, outermost first).
 */
export async function* walkTree(
  source: TreeSource,
  filter: TreeFilter,
  signal: AbortSignal,
  unreadable: UnreadablePolicy,
): AsyncGenerator<TreeEntry[]> {
  // Explored directories not sent yet, outermost first.
  const pending: TreeEntry[] = [];
  const stack: Frame[] = [];
  let batch: TreeEntry[] = [];

  /** Pushes the frame of `dir`; false if it is an explored directory that cannot be read (passed over, like fsutil). */
  const enter = async (dir: string, explored: TreeEntry | undefined): Promise<boolean> => {
    try {
      stack.push({ entries: await source.list(dir), next: 0, explored });
      return true;
    } catch (err) {
      if (!(err instanceof BuildKitNodeError && err.code === "PERMISSION_DENIED")) throw err;
      // Like fsutil: an unreadable directory nobody asked for is passed over.
      if (explored) return false;
      // One that is sent: its entry has gone out already; it is sent empty, or the transfer fails.
      unreadable.report(dir, "directory", err);
      stack.push({ entries: [], next: 0, explored });
      return true;
    }
  };
  /** Leaves an explored directory: still pending means nothing inside was sent. */
  const leave = (explored: TreeEntry | undefined) => {
    if (explored && pending[pending.length - 1] === explored) pending.pop();
  };

  await enter("", undefined);
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    if (frame.next >= frame.entries.length) {
      stack.pop();
      leave(frame.explored);
      continue;
    }
    const entry = frame.entries[frame.next++]!;
    signal.throwIfAborted();
    const isDir = isDirectory(entry);
    const verdict = filter.classify(entry.path, isDir);
    if (verdict === "skip") continue;
    if (verdict === "keep") {
      if (pending.length > 0) batch.push(...pending.splice(0));
      batch.push(entry);
    } else {
      pending.push(entry);
    }
    if (isDir) {
      if (batch.length > 0) {
        yield batch;
        batch = [];
      }
      const explored = verdict === "explore" ? entry : undefined;
      if (!(await enter(entry.path, explored))) leave(explored);
    } else if (batch.length >= BATCH_SIZE) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}
