import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { createHash, type Hash, randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, statSync } from "node:fs";
import { hostname } from "node:os";
import { basename, dirname, posix, resolve } from "node:path";
import { Readable } from "node:stream";
import { AbortError, BuildKitNodeError } from "../errors.js";
import type { Control, StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";
import { createLogger } from "../log.js";
import type { Attachable } from "../session/attachable.js";
import { authAttachable, resolveCredentials } from "../session/auth.js";
import { fileSendAttachable } from "../session/filesend/file-send.js";
import { fileSyncAttachable } from "../session/filesync/file-sync.js";
import { isDirectory } from "../session/filesync/entry-tree.js";
import type { TarLimits } from "../session/filesync/tar-source.js";
import { directorySource, memorySource, tarSource, type TreeSource } from "../session/filesync/tree-source.js";
import { secretsAttachable, validateSecrets } from "../session/secrets.js";
import { BuildSession } from "../session/session.js";
import { sshAttachable } from "../session/ssh.js";
import type { BuildOptions, BuildResult, ContextInput } from "./build-options.js";
import { isDaemonAnswer } from "./call-error.js";
import { takeContextsInHand } from "./context-hold.js";
import type { BuildEvent } from "./events.js";
import { EventQueue } from "./event-queue.js";
import { checkDaemonSupports, type DaemonKind } from "./daemon-kind.js";
import { planOutputs } from "./outputs.js";
import { type OpenStream, openSessionTunnel } from "./session-tunnel.js";
import { localDockerfileText, solveError, type SolveFailureContext } from "./solve-error.js";
import { cacheEntries, entitlements, frontendAttrs } from "./solve-request.js";
import { StatusTracker } from "./status-tracker.js";
import { validateBuildOptions } from "./validate-options.js";

const log = createLogger("build");

/** How long the progress stream may trail the solve's answer. */
const STATUS_GRACE_MS = 10_000;
/** How long the daemon gets to end the session after we half-close it. */
const SESSION_CLOSE_GRACE_MS = 5_000;

/** What a build needs from its client. */
export interface BuildTarget {
  address: string;
  control: Client<typeof Control>;
  /** A call's raw HTTP/2 stream (the session tunnel frames its own messages). */
  openStream: OpenStream;
  /** What kind of BuildKit this is (asked once, when a build needs it). */
  daemon(): Promise<DaemonKind>;
  /** Exporters the daemon accepts in one solve (1 before BuildKit v0.13). */
  maxExporters(): Promise<number>;
  /** Maps a failed call that started at `since` (epoch ms) to the error a caller should see (see call-error.ts). */
  callError(err: unknown, context: string, signal: AbortSignal | undefined, since: number): BuildKitNodeError;
}

/**
 * A running build: `await` it for the result, iterate `events` for progress.
 * The build runs whether or not anyone listens; events are kept until taken.
 */
export class BuildRun<R extends BuildResult = BuildResult> implements PromiseLike<R> {
  /** The job reference the daemon knows this build by ("" for a Depot build of several machines: see the result's buildId). */
  readonly ref: string;
  /** Typed progress; ends when the build ends (success or failure). */
  readonly events: AsyncIterable<BuildEvent>;
  readonly #result: Promise<R>;

  /** @internal */
  constructor(ref: string, events: AsyncIterable<BuildEvent>, result: Promise<R>) {
    this.ref = ref;
    this.events = events;
    this.#result = result;
    result.catch(() => {}); // reported to whoever awaits the run, never as an unhandled rejection
  }

  then<T = R, E = never>(
    onFulfilled?: ((value: R) => T | PromiseLike<T>) | null,
    onRejected?: ((reason: unknown) => E | PromiseLike<E>) | null,
  ): Promise<T | E> {
    return this.#result.then(onFulfilled, onRejected);
  }

  catch<E = never>(onRejected?: ((reason: unknown) => E | PromiseLike<E>) | null): Promise<R | E> {
    return this.#result.catch(onRejected);
  }

  finally(onFinally?: (() => void) | null): Promise<R> {
    return this.#result.finally(onFinally);
  }
}

export function startBuild(target: BuildTarget, options: BuildOptions): BuildRun {
  validateBuildOptions(options);
  // Before anything is awaited: a stream read only later could lose data meanwhile.
  const held = takeContextsInHand(options);
  const ref = randomBytes(13).toString("hex").slice(0, 25);
  const events = new EventQueue<BuildEvent>();
  const result = runBuild(target, held.options, ref, (event) => events.push(event))
    .catch((err: unknown) => {
      // Whatever broke, the caller gets one of our errors.
      throw BuildKitNodeError.from(err, "build");
    })
    .finally(() => {
      held.release();
      events.end();
    });
  return new BuildRun(ref, events, result);
}

async function runBuild(target: BuildTarget, options: BuildOptions, ref: string, emit: (event: BuildEvent) => void): Promise<BuildResult> {
  const controller = new AbortController();
  const { signal } = controller;
  const userSignal = options.signal;
  const onUserAbort = () => controller.abort(userSignal?.reason);
  if (userSignal?.aborted) throw abortError(userSignal);
  userSignal?.addEventListener("abort", onUserAbort, { once: true });

  const cleanups: (() => Promise<void> | void)[] = [];
  let succeeded = false;
  /** False when the daemon is gone: then nothing waits for it to say goodbye. */
  let daemonReachable = true;
  try {
    const outputs = options.outputs ?? [];
    if (outputs.length > 1 && outputs.length > (await target.maxExporters())) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `${target.address} takes one output per build (BuildKit before v0.13); ${outputs.length} were given`);
    }
    if (options.secrets) validateSecrets(options.secrets);
    const daemon = await target.daemon();
    checkDaemonSupports(options, daemon, target.address);
    const plan = planOutputs(outputs, { address: target.address, daemon, signal });
    cleanups.push(() => {
      if (!succeeded) plan.abandon();
    });

    const locals = await openLocals(options, cleanups, signal);
    await assertDockerfileIn(locals, options);
    const attrs = { ...frontendAttrs(options, locals.dockerfileName), ...locals.contextAttrs };
    const registryAuth = options.registryAuth ?? "docker-config";
    const fileSync = fileSyncAttachable(locals.dirs, {
      onUnreadable: options.onUnreadable ?? "error",
      warn: (message) => emit({ type: "warning", digest: "", message, detail: [] }),
    });
    const attachables: Attachable[] = [fileSync, authAttachable(registryAuth)];
    const fileSend = plan.targets.size > 0 ? fileSendAttachable(plan.targets) : undefined;
    if (fileSend) attachables.push(fileSend);
    if (options.secrets) attachables.push(secretsAttachable(options.secrets));
    if (options.ssh?.length) {
      const ssh = sshAttachable(options.ssh);
      attachables.push(ssh);
      cleanups.push(() => ssh.close());
    }

    const session = new BuildSession({ sharedKey: locals.sharedKey, attachables });
    // Only the caller's abort cuts the session short; otherwise it ends in
    // the clean-up below, as the Go client ends it.
    const tunnel = openSessionTunnel(target.openStream, session.headers, userSignal);
    const served = session.serve(tunnel.connection);
    cleanups.push(async () => {
      // Half-close: the daemon drops the session and ends the call (within milliseconds).
      tunnel.connection.end();
      if (daemonReachable) await settledWithin(tunnel.closed, SESSION_CLOSE_GRACE_MS);
      served.close();
      tunnel.connection.destroy();
      // Outputs cut short clean up after themselves; the build settles after that.
      if (fileSend) await settledWithin(fileSend.drained(), SESSION_CLOSE_GRACE_MS);
    });

    const exporters = plan.exporters;
    log(`solve ${ref} on ${target.address}: ${exporters.map((e) => e.type).join(", ") || "no export"}`);
    const dockerfile = () => ({ name: locals.dockerfileName, text: localDockerfileText(options, locals.dockerfileName) });
    const solved = await solveWithProgress(target, ref, emit, signal, dockerfile, {
      ref,
      session: session.id,
      frontend: "dockerfile.v0",
      frontendAttrs: attrs,
      // Old daemons read only the single exporter of fields 3/4, new ones the list.
      exporterDeprecated: exporters[0]?.type ?? "",
      exporterAttrsDeprecated: exporters[0]?.attrs ?? {},
      exporters,
      cache: { imports: cacheEntries(options.cacheFrom, "cacheFrom"), exports: cacheEntries(options.cacheTo, "cacheTo") },
      entitlements: entitlements(options),
    }, options.onStatus);
    if (signal.aborted) throw abortError(userSignal);
    if ("failure" in solved) {
      daemonReachable = solved.daemonAnswered;
      // A refused Docker load makes the export fail; say why, not just that.
      const cause = plan.clientFailure() ?? fileSync.clientFailure();
      if (cause instanceof BuildKitNodeError) throw cause;
      throw solved.failure;
    }
    const { exporterResponse } = solved;

    const { pushed } = await plan.finish({
      exporterResponse,
      credentials: (host) => resolveCredentials(registryAuth, host),
      emit,
      signal,
    });
    const digest = pushed[0]?.digest ?? exporterResponse["containerimage.digest"];
    succeeded = true;
    return { ref, ...(digest ? { digest } : {}), exporterResponse, pushed };
  } catch (err) {
    if (signal.aborted) throw abortError(userSignal, err);
    throw err;
  } finally {
    userSignal?.removeEventListener("abort", onUserAbort);
    controller.abort(); // ends whatever is still running: status, uploads, a pending load
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        log(`cleanup after ${ref}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}

type SolveRequestInit = Parameters<Client<typeof Control>["solve"]>[0];

/**
 * Runs the solve while following its progress. The progress stream may
 * trail the solve's answer a little (its last updates), never forever; when
 * the solve failed on our side of the wire (the daemon never answered),
 * there is nothing to wait for. A failure comes back classified (see
 * `solveFailure`), with whether the daemon was still there to answer.
 */
async function solveWithProgress(
  target: BuildTarget,
  ref: string,
  emit: (event: BuildEvent) => void,
  signal: AbortSignal,
  dockerfile: SolveFailureContext["dockerfile"],
  request: SolveRequestInit,
  onStatus?: (status: StatusResponse) => void,
): Promise<{ exporterResponse: Record<string, string> } | { failure: BuildKitNodeError; daemonAnswered: boolean }> {
  const tracker = new StatusTracker();
  const statusController = new AbortController();
  const progress = followStatus(target, ref, tracker, emit, AbortSignal.any([signal, statusController.signal]), onStatus);
  const since = Date.now();
  let outcome: { exporterResponse: Record<string, string> } | { failure: BuildKitNodeError; daemonAnswered: boolean };
  try {
    const response = await target.control.solve(request, { signal });
    outcome = { exporterResponse: { ...response.exporterResponse } };
  } catch (err) {
    outcome = { failure: solveFailure(err, tracker, target, signal, since, dockerfile), daemonAnswered: isDaemonAnswer(err) };
  }
  if (!("failure" in outcome) || outcome.daemonAnswered) await settledWithin(progress, STATUS_GRACE_MS);
  statusController.abort();
  await progress;
  for (const event of tracker.flush()) emit(event);
  return outcome;
}

async function followStatus(
  target: BuildTarget,
  ref: string,
  tracker: StatusTracker,
  emit: (e: BuildEvent) => void,
  signal: AbortSignal,
  onStatus?: (status: StatusResponse) => void,
): Promise<void> {
  try {
    for await (const status of target.control.status({ ref }, { signal })) {
      onStatus?.(status);
      for (const event of tracker.update(status)) emit(event);
    }
  } catch (err) {
    // Progress is best effort; the solve's answer decides the build.
    if (!signal.aborted) log(`status of ${ref}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

interface Locals {
  dirs: Map<string, TreeSource>;
  dockerfileName: string;
  /** `context:NAME` attributes for local named contexts, and references as given. */
  contextAttrs: Record<string, string>;
  sharedKey: string;
}

/** The local directories the frontend will ask for, as tree sources. */
async function openLocals(options: BuildOptions, cleanups: (() => Promise<void> | void)[], signal: AbortSignal): Promise<Locals> {
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
  return { dirs, dockerfileName, contextAttrs, sharedKey: sharedKeyFor(options, identities) };
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
      if (signal.aborted) throw aborted();
      let onAbort!: () => void;
      const stop = new Promise<never>((_, reject) => (onAbort = () => reject(aborted())));
      signal.addEventListener("abort", onAbort, { once: true });
      const next = await Promise.race([chunks.next(), stop]).finally(() => signal.removeEventListener("abort", onAbort));
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

/**
 * What a failed solve becomes: a lost connection, a timeout or the caller's
 * abort as `callError` says; a request over the daemon's size limit
 * RESOURCE_EXHAUSTED; anything else the daemon answered a BuildError read
 * from its structured details (see solve-error.ts).
 */
function solveFailure(
  err: unknown,
  tracker: StatusTracker,
  target: BuildTarget,
  signal: AbortSignal,
  since: number,
  dockerfile: SolveFailureContext["dockerfile"],
): BuildKitNodeError {
  const what = `building on ${target.address}`;
  const answered = err instanceof ConnectError && isDaemonAnswer(err);
  if (!answered || [Code.Unavailable, Code.Canceled, Code.DeadlineExceeded].includes(err.code)) {
    const failure = target.callError(err, what, signal, since);
    return failure.code === "RESOURCE_EXHAUSTED" ? requestTooLarge(target, failure) : failure;
  }
  if (err.code === Code.ResourceExhausted) return requestTooLarge(target, err);
  return solveError(err, { failedVertex: (digest) => tracker.failedVertex(digest), dockerfile });
}

/** The Solve request (build args, labels, …) is over a gRPC message limit: ours (16 MiB) or the daemon's (dockerd: 4 MiB). */
function requestTooLarge(target: BuildTarget, cause: Error): BuildKitNodeError {
  const connectError = cause instanceof ConnectError ? cause : cause.cause instanceof ConnectError ? cause.cause : undefined;
  const detail = connectError?.rawMessage ?? cause.message;
  return new BuildKitNodeError(
    "RESOURCE_EXHAUSTED",
    `building on ${target.address}: the build request is larger than a gRPC message may be (${detail}); build args and labels travel in it, so keep large values in the context or in secrets`,
    { cause },
  );
}

function abortError(signal: AbortSignal | undefined, cause?: unknown): AbortError {
  return new AbortError("the build was aborted", { cause: signal?.reason ?? cause });
}

/** Waits for `promise` to settle, or `ms` at most; leaves no timer behind. */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
