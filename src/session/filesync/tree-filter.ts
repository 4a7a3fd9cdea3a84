// Which entries of a tree a DiffCopy call sends, from the call's include
// patterns, exclude patterns (.dockerignore) and followpaths, with fsutil's
// rules: an entry must match an include pattern (or sit under a match) and
// must not be excluded; a directory that is not sent itself is still looked
// into when something inside it could be (its STAT then goes out lazily,
// before its first sent child).
import { dedupePaths, resolveFollowPaths } from "./follow-paths.js";
import { PatternMatcher } from "./patterns.js";
import type { TreeSource } from "./tree-source.js";

export interface TransferFilter {
  includePatterns: readonly string[];
  excludePatterns: readonly string[];
  followPaths: readonly string[];
}

/** keep: send it (and look inside if a dir); explore: do not send, but look inside; skip: neither. */
export type Verdict = "keep" | "explore" | "skip";

export class TreeFilter {
  private constructor(
    private readonly include: PatternMatcher | undefined,
    private readonly exclude: PatternMatcher | undefined,
  ) {}

  /** @throws BuildKitNodeError INVALID_ARGUMENT for a malformed pattern. */
  static async create(source: TreeSource, filter: TransferFilter): Promise<TreeFilter> {
    let includePatterns: readonly string[] | undefined = filter.includePatterns;
    if (filter.followPaths.length > 0) {
      const targets = await resolveFollowPaths(source, filter.followPaths);
      // fsutil dedupes the combined list as it comes (unsorted); undefined means "the root": no filter from it.
      if (targets) includePatterns = dedupePaths([...includePatterns, ...targets]);
    }
    return new TreeFilter(
      includePatterns && includePatterns.length > 0 ? new PatternMatcher(includePatterns) : undefined,
      filter.excludePatterns.length > 0 ? new PatternMatcher(filter.excludePatterns) : undefined,
    );
  }

  classify(path: string, isDir: boolean): Verdict {
    let keep = true;
    if (this.include && !this.include.matches(path)) {
      if (!isDir || !this.include.mightMatchInside(path, "patterns")) return "skip";
      keep = false;
    }
    if (this.exclude?.matches(path)) {
      if (!isDir || !this.exclude.mightMatchInside(path, "exceptions")) return "skip";
      keep = false;
    }
    return keep ? "keep" : "explore";
  }
}
