import * as path from "node:path";
import { GrpcCode, GrpcStatusError } from "../grpc-server.js";

/**
 * True for a path fsutil may legitimately send: relative, `/`-separated and
 * clean (Go's `path.Clean(p) == p`), so no `..`, no `.`, no empty or trailing
 * segment and no leading `/`.
 */
export function isCleanRelativePath(p: string): boolean {
  if (p === "" || p === "." || p.includes("\0")) return false;
  if (p.startsWith("/") || p.endsWith("/")) return false;
  if (path.posix.normalize(p) !== p) return false;
  // A normalized relative path can only keep `..` at its start.
  return p !== ".." && !p.startsWith("../");
}

/** `a/b/c` → `a/b`; a top-level entry's parent is "" (the destination itself). */
function parentOf(p: string): string {
  const slash = p.lastIndexOf("/");
  return slash < 0 ? "" : p.slice(0, slash);
}

/** The error for an entry the sender should never have sent. */
export function refusedEntry(p: string, why: string): GrpcStatusError {
  return new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, `refusing output entry ${JSON.stringify(p)}: ${why}`);
}

/**
 * Checks that entries arrive in fsutil's walk order (depth-first, each
 * directory before its contents, siblings in byte order of their UTF-8
 * names), as Go's receiver does. Memory is the depth of the tree.
 *
 * This is also what keeps writes inside the destination: an entry is only
 * accepted inside a directory this transfer itself sent (and so created as a
 * real directory), and no path can come twice, so nothing sent earlier — a
 * symlink, say — can stand in a later entry's parent chain.
 */
export class WalkOrder {
  /** The directories still open, root first, each with the last name seen in it. */
  private readonly open: { dir: string; last: Buffer | undefined }[] = [{ dir: "", last: undefined }];

  /** Throws unless `p` may come next. */
  accept(p: string, isDirectory: boolean): void {
    if (!isCleanRelativePath(p)) throw refusedEntry(p, "not a clean relative path");
    const parent = parentOf(p);
    let depth = this.open.length - 1;
    while (depth >= 0 && this.open[depth]!.dir !== parent) depth--;
    if (depth < 0) throw refusedEntry(p, "its parent directory was not sent just before its contents");
    this.open.length = depth + 1;
    const current = this.open[depth]!;
    const name = Buffer.from(parent === "" ? p : p.slice(parent.length + 1));
    if (current.last && Buffer.compare(name, current.last) <= 0) throw refusedEntry(p, "repeated or out of order");
    current.last = name;
    if (isDirectory) this.open.push({ dir: p, last: undefined });
  }
}
