// The local directories a build serves through FileSync: the context, the
// directory of the Dockerfile (or its text), local named contexts, each a
// TreeSource, and the session key the daemon diffs their uploads under.
import { createHash, type Hash } from "node:crypto";
import { closeSync, existsSync, openSync, statSync } from "node:fs";
import { hostname } from "node:os";
import { basename, dirname, posix, resolve } from "node:path";
import { Readable } from "node:stream";
import { AbortError, BuildKitNodeError } from "../errors.js";
import { isDirectory } from "../session/filesync/entry-tree.js";
import type { TarLimits } from "../session/filesync/tar-source.js";
import { directorySource, memorySource, tarSource, type TreeSource } from "../session/filesync/tree-source.js";
import { raceAbort } from "../transport/race-abort.js";
import type { BuildOptions, ContextInput } from "./build-options.js";

export interface Locals {
  dirs: Map<string, TreeSource>;
  dockerfileName: string;
  /** `context:NAME` attributes for local named contexts, and references as given. */
  contextAttrs: Record<string, string>;
  sharedKey: string;
}

/**
 * The local directories the frontend will ask for, as tree sources, each
 * closed by a clean-up pushed to `cleanups`. A `{ tar }` or `{ files }`
 * context must hold the Dockerfile it names: refused here, by name.
 */
export async function openLocals(options: BuildOptions, cleanups: (() => Promise<void> | void)[], signal: AbortSignal): Promise<Locals> {
  // What each local holds, for the session's shared key.
  const identities: string[] = [];
  const open = async (input: ContextInput, name: string): Promise<TreeSource> => {
    const { source, identity } = await openSource(input, signal, options.tarLimits);
    cleanups.push(() => source.close());
    if (name !== "dockerfile") identities.push(`${name}=${identity}`);
    return source;
  };
  const dirs = new Map<string, TreeSource>();
  const context = await open(options.context, "context");
  dirs.set("context", context);

  let dockerfileName: string;
  if (options.dockerfileContent !== undefined) {
    dockerfileName = options.dockerfile ? basename(options.dockerfile) : "Dockerfile";
    dirs.set("dockerfile", await open({ files: { [dockerfileName]: options.dockerfileContent } }, "dockerfile"));
  } else if (typeof options.context === "string") {
    const path = resolve(options.context, options.dockerfile ?? "Dockerfile");
    if (!existsSync(path) || !statSync(path).isFile()) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `no Dockerfile at ${path}`);
    }
    assertReadable(path);
    dockerfileName = basename(path);
    dirs.set("dockerfile", await open(dirname(path), "dockerfile"));
  } else {
    // The Dockerfile lives inside the uploaded or in-memory context.
    dockerfileName = posix.normalize(options.dockerfile ?? "Dockerfile").replace(/^(\.\/)+/, "");
    if (dockerfileName.startsWith("../") || dockerfileName.startsWith("/")) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `dockerfile must be a path inside the context, not ${options.dockerfile}`);
    }
    dirs.set("dockerfile", context);
  }

  const contextAttrs: Record<string, string> = {};
  for (const [name, input] of Object.entries(options.extraContexts ?? {})) {
    if (typeof input === "string" && /^[a-z][a-z0-9+.-]*:\/\//i.test(input)) {
      contextAttrs[`context:${name}`] = input; // docker-image://, https://, git…
      continue;
    }
    const localName = `named-context:${name}`;
    dirs.set(localName, await open(input, localName));
    contextAttrs[`context:${name}`] = `local:${localName}`;
  }
  const locals = { dirs, dockerfileName, contextAttrs, sharedKey: sharedKeyFor(options, identities) };
  await assertDockerfileIn(locals, options);
  return locals;
}

/** The daemon would read an unreadable Dockerfile as an empty one ("the Dockerfile cannot be empty"): say what it is. */
function assertReadable(dockerfile: string): void {
  try {
    closeSync(openSync(dockerfile, "r"));
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === "EACCES" ? "permission denied" : (err as Error).message;
    throw new BuildKitNodeError("INVALID_ARGUMENT", `the Dockerfile ${dockerfile} cannot be read: ${why}`, { cause: err });
  }
}

/**
 * An uploaded or in-memory context must hold the Dockerfile the build names:
 * refused here, by name, rather than by the daemon with a temporary path.
 */
async function assertDockerfileIn(locals: Locals, options: BuildOptions): Promise<void> {
  if (options.dockerfileContent !== undefined || typeof options.context === "string") return;
  const entry = await locals.dirs.get("dockerfile")?.stat(locals.dockerfileName);
  if (entry && !isDirectory(entry)) return;
  const kind = "tar" in options.context ? "the tar context" : "the files context";
  throw new BuildKitNodeError(
    "INVALID_ARGUMENT",
    `${kind} has no Dockerfile at ${JSON.stringify(locals.dockerfileName)}${entry ? " (that is a directory)" : ""}; set dockerfile to its path inside the context, or give dockerfileContent`,
  );
}

/** Opens a context input, with what identifies its contents. */
async function openSource(input: ContextInput, signal: AbortSignal, tarLimits: TarLimits | undefined): Promise<{ source: TreeSource; identity: string }> {
  if (typeof input === "string") {
    const path = resolve(input);
    return { source: await directorySource(path), identity: `dir:${path}` };
  }
  if ("tar" in input) {
    const hash = createHash("sha256");
    const hashed = Readable.from(hashedChunks(input.tar, hash, signal), { objectMode: false });
    const source = await tarSource(hashed, tarLimits ?? {});
    return { source, identity: `tar:${hash.digest("hex")}` };
  }
  if ("files" in input) {
    const hash = createHash("sha256");
    for (const name of Object.keys(input.files).sort()) {
      const content = input.files[name]!;
      hash.update(`${name}\u0000${Buffer.byteLength(content)}\u0000`).update(content);
    }
    return { source: memorySource(input.files), identity: `files:${hash.digest("hex")}` };
  }
  throw new BuildKitNodeError("INVALID_ARGUMENT", "context must be a directory path, { tar: Readable } or { files: {...} }");
}

/**
 * An upload's chunks, hashed on the way. An abort ends the read at once,
 * even while the upload stalls, and destroys the upload stream.
 */
async function* hashedChunks(tar: AsyncIterable<Uint8Array>, hash: Hash, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const chunks = tar[Symbol.asyncIterator]();
  const aborted = () => new AbortError("the build was aborted while its context was read", { cause: signal.reason });
  try {
    for (;;) {
      const next = await raceAbort(chunks.next(), signal, aborted);
      if (next.done) return;
      hash.update(next.value);
      yield next.value;
    }
  } finally {
    if (signal.aborted && "destroy" in tar && typeof tar.destroy === "function") (tar as Readable).destroy(aborted());
    // Not awaited: a stalled source would hold the abort up.
    chunks.return?.()?.catch(() => {});
  }
}

/**
 * The daemon diffs each upload against the last one made under the same key
 * and asks only for files whose metadata changed. The caller's `sharedKey`
 * when given; by default a directory keeps its key (per path and machine,
 * like buildx), so a rebuild sends only what changed, and uploads and
 * in-memory files get a key from their contents (a tarball's entries may
 * have fixed times, so two different contents must not share a key).
 */
function sharedKeyFor(options: BuildOptions, identities: string[]): string {
  const { context, sharedKey } = options;
  if (sharedKey !== undefined) return sharedKey;
  const label = typeof context === "string" ? basename(resolve(context)) : "tar" in context ? "upload" : "files";
  const digest = createHash("sha256").update(hostname()).update("\u0000").update(identities.join("\u0000")).digest("hex").slice(0, 32);
  return `${label}:${digest}`;
}
