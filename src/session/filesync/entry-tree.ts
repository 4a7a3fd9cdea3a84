// An in-memory index of a tree (for tar uploads and in-memory files): each
// node holds its entry and, for regular files, where its content is.
import { BuildKitNodeError } from "../../errors.js";
import { GoMode } from "../fsutil/file-mode.js";
import type { TreeEntry } from "./tree-source.js";
import { assertTreePath, sortByUtf8 } from "./tree-path.js";

export interface TreeNode<Content> {
  entry: TreeEntry;
  /** Present for directories. */
  children?: Map<string, TreeNode<Content>>;
  /** Children's entries in UTF-8 order, computed on first listing. */
  sorted?: TreeEntry[];
  /** Present for regular files. */
  content?: Content;
}

export function isDirectory(entry: TreeEntry): boolean {
  return (entry.mode & GoMode.Dir) !== 0;
}

export function isSymlink(entry: TreeEntry): boolean {
  return (entry.mode & GoMode.Symlink) !== 0;
}

/** A directory entry for a parent no entry described. */
function implicitDirectory(path: string, modTimeNs: bigint): TreeEntry {
  return { path, mode: (GoMode.Dir | 0o755) >>> 0, size: 0, modTimeNs, linkname: "", uid: 0, gid: 0 };
}

export class EntryTree<Content> {
  readonly root: TreeNode<Content>;

  constructor(private readonly implicitModTimeNs: bigint) {
    this.root = { entry: implicitDirectory("", implicitModTimeNs), children: new Map() };
  }

  /** The node at `components`, if any. */
  find(components: readonly string[]): TreeNode<Content> | undefined {
    let node: TreeNode<Content> | undefined = this.root;
    for (const name of components) {
      node = node.children?.get(name);
      if (!node) return undefined;
    }
    return node;
  }

  get(path: string): TreeNode<Content> | undefined {
    assertTreePath(path);
    return this.find(path === "" ? [] : path.split("/"));
  }

  /**
   * Adds `entry` at `components`, creating missing parents as 0755
   * directories. A later entry for the same path replaces the earlier one
   * (tar semantics); a directory over a directory keeps its children.
   * `what` names the entry in errors.
   */
  put(components: readonly string[], entry: Omit<TreeEntry, "path">, content: Content | undefined, what: string): void {
    if (components.length === 0) {
      // The root itself ("./" in a tar): nothing to send for it.
      return;
    }
    let parent = this.root;
    for (let i = 0; i < components.length - 1; i++) {
      const name = components[i]!;
      let child = parent.children!.get(name);
      if (!child) {
        child = { entry: implicitDirectory(components.slice(0, i + 1).join("/"), this.implicitModTimeNs), children: new Map() };
        this.addChild(parent, name, child);
      } else if (!child.children) {
        const kind = isSymlink(child.entry) ? "a symlink" : "not a directory";
        throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: its parent ${child.entry.path} is ${kind}`);
      }
      parent = child;
    }
    const name = components[components.length - 1]!;
    const path = components.join("/");
    const existing = parent.children!.get(name);
    const node: TreeNode<Content> = { entry: { ...entry, path } };
    if (isDirectory(node.entry)) node.children = existing?.children ?? new Map();
    else if (existing?.children && existing.children.size > 0) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: replaces the non-empty directory ${path}`);
    }
    if (content !== undefined) node.content = content;
    this.addChild(parent, name, node);
  }

  /** Entries directly inside `dir`, in UTF-8 order; [] if `dir` is absent or not a directory. */
  list(dir: string): TreeEntry[] {
    const node = this.get(dir);
    if (!node?.children) return [];
    node.sorted ??= sortByUtf8(node.children, ([name]) => name).map(([, child]) => child.entry);
    return node.sorted;
  }

  /** Every node, parents before children (for validation passes). */
  *nodes(node: TreeNode<Content> = this.root): Generator<TreeNode<Content>> {
    for (const child of node.children?.values() ?? []) {
      yield child;
      yield* this.nodes(child);
    }
  }

  private addChild(parent: TreeNode<Content>, name: string, child: TreeNode<Content>): void {
    parent.children!.set(name, child);
    delete parent.sorted;
  }
}
