// Relative, '/'-separated paths as fsutil sends them: no leading '/' or
// './', no '.' or '..' components, the root being "".
import { BuildKitNodeError } from "../../errors.js";

/** Go's `path.Clean`: lexical, keeps leading `..` of relative paths, "" → ".". */
export function cleanPath(path: string): string {
  const rooted = path.startsWith("/");
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part !== "..") parts.push(part);
    else if (parts.length > 0 && parts[parts.length - 1] !== "..") parts.pop();
    else if (!rooted) parts.push("..");
  }
  const joined = parts.join("/");
  if (rooted) return `/${joined}`;
  return joined === "" ? "." : joined;
}

/** The entry `name` inside `dir` ("" = root). */
export function joinPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

/** The directory holding `path` ("" for a top-level entry). */
export function parentPath(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}

/**
 * Go orders strings by their UTF-8 bytes, and the daemon checks that order
 * ("changes out of order"). JS string comparison uses UTF-16 code units,
 * which puts astral characters (😀) before U+E000–U+FFFF; bytes do not.
 */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Surrogates: the only UTF-16 code units whose order differs from their characters' UTF-8 order. */
const SURROGATE = /[\uD800-\uDFFF]/;

/** `items` sorted by the UTF-8 bytes of `key(item)`. */
export function sortByUtf8<T>(items: Iterable<T>, key: (item: T) => string): T[] {
  const keyed = [...items].map((item) => ({ item, key: key(item) }));
  if (keyed.some((k) => SURROGATE.test(k.key))) {
    // Each key encoded once; compared as bytes.
    return keyed
      .map(({ item, key }) => ({ item, bytes: Buffer.from(key, "utf8") }))
      .sort((a, b) => Buffer.compare(a.bytes, b.bytes))
      .map(({ item }) => item);
  }
  // Without surrogates, UTF-16 code unit order is code point order, which is UTF-8 byte order.
  return keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map(({ item }) => item);
}

/**
 * Splits a path that must stay inside a root (a tar entry name, an in-memory
 * file name) into its components: `./` prefixes, empty and `.` components
 * are dropped; absolute paths and any `..` are refused. "" or "." → [].
 */
export function rootedComponents(path: string, what: string): string[] {
  if (path.startsWith("/")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: absolute path ${JSON.stringify(path)} is not allowed`);
  }
  if (path.includes("\0")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: path ${JSON.stringify(path)} contains a NUL byte`);
  }
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `${what}: path ${JSON.stringify(path)} leaves the root ("..")`);
  }
  return parts;
}

/** Checks a path a TreeSource is asked about: relative, clean, inside the root. */
export function assertTreePath(path: string): void {
  if (path === "") return;
  if (path.startsWith("/") || path.endsWith("/") || path.split("/").some((p) => p === "" || p === "." || p === "..")) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `not a clean relative path: ${JSON.stringify(path)}`);
  }
}
