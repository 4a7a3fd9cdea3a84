// `followpaths`: paths the daemon wants even when they are reached through
// symlinks (the Dockerfile may be a link). Each path is walked component by
// component inside the source; a symlink met on the way adds both the link
// and its resolved target(s) to the include patterns. Targets are resolved
// inside the root: an absolute target counts from the root, `..` stops at
// it, so nothing outside is ever named.
import { BuildKitNodeError } from "../../errors.js";
import { isSymlink } from "./entry-tree.js";
import { Pattern } from "./patterns.js";
import type { TreeSource } from "./tree-source.js";
import { cleanPath, compareUtf8, parentPath } from "./tree-path.js";

/** Symlinks resolved per call, a guard against pathological trees. */
const MAX_RESOLUTIONS = 10_000;

/**
 * The include patterns `paths` stand for, sorted and without paths already
 * covered by a parent in the list; undefined if one of them is the root
 * itself (then they filter nothing).
 */
export async function resolveFollowPaths(source: TreeSource, paths: readonly string[]): Promise<string[] | undefined> {
  const resolver = new SymlinkResolver(source);
  for (const p of paths) await resolver.add(p);
  return dedupePaths([...resolver.resolved].sort(compareUtf8));
}

/**
 * Drops paths under an earlier path of the (sorted) list; undefined if the
 * root is among them. Applied again by the filter to the combined include
 * list, as fsutil does.
 */
export function dedupePaths(sorted: readonly string[]): string[] | undefined {
  const out: string[] = [];
  let last: string | undefined;
  for (const p of sorted) {
    if (p === ".") return undefined;
    if (last !== undefined && p.startsWith(`${last}/`)) continue;
    out.push(p);
    last = p;
  }
  return out;
}

class SymlinkResolver {
  readonly resolved = new Set<string>();
  private resolutions = 0;

  constructor(private readonly source: TreeSource) {}

  /** Walks `p` from the root; see the file comment. */
  async add(p: string): Promise<void> {
    let rest = p;
    let current = ".";
    for (;;) {
      const slash = rest.indexOf("/");
      const head = slash < 0 ? rest : rest.slice(0, slash);
      rest = slash < 0 ? "" : rest.slice(slash + 1);
      current = cleanPath(`${current}/${head}`);

      const targets = await this.symlinkTargets(current, true);
      if ((rest === "" || targets) && this.resolved.has(current)) return;
      if (targets) {
        this.resolved.add(current);
        if (++this.resolutions > MAX_RESOLUTIONS) {
          throw new BuildKitNodeError("INVALID_ARGUMENT", `${this.source.description}: too many symlinks while resolving followpaths`);
        }
        for (const target of targets) await this.add(rest === "" ? target : `${target}/${rest}`);
        return;
      }
      if (rest === "") {
        this.resolved.add(current);
        return;
      }
    }
  }

  /**
   * Where the symlink at `p` points, as root-relative paths with a leading
   * "/" (stripped by add); undefined if `p` is not a symlink. A last
   * component with wildcards stands for every matching name in its directory.
   */
  private async symlinkTargets(p: string, allowWildcards: boolean): Promise<string[] | undefined> {
    // The root, or a path that climbed out of it: nothing to resolve there.
    if (p === "." || p === ".." || p.startsWith("../")) return undefined;
    const dir = parentPath(p);
    const name = p.slice(dir === "" ? 0 : dir.length + 1);
    if (allowWildcards && containsWildcards(name)) {
      const glob = globMatcher(name);
      const out: string[] = [];
      for (const entry of await this.source.list(dir)) {
        const entryName = entry.path.slice(dir === "" ? 0 : dir.length + 1);
        if (glob(entryName)) out.push(...((await this.symlinkTargets(entry.path, false)) ?? []));
      }
      return out.length > 0 ? out : undefined;
    }
    const entry = await this.source.stat(p);
    if (!entry || !isSymlink(entry)) return undefined;
    const link = cleanPath(entry.linkname);
    if (link.startsWith("/")) return [link];
    return [cleanPath(`/${dir}/${link}`)];
  }
}

/** Like fsutil: `*`, `?` or `[` not escaped by `\`. */
function containsWildcards(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const ch = name[i];
    if (ch === "\\") i++;
    else if (ch === "*" || ch === "?" || ch === "[") return true;
  }
  return false;
}

/** Matches one name against a glob; a malformed glob matches nothing (Go ignores its error there). */
function globMatcher(glob: string): (name: string) => boolean {
  try {
    const pattern = new Pattern(glob, false);
    return (name) => pattern.matches(name);
  } catch {
    return () => false;
  }
}
