import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { AbortError, BuildKitNodeError } from "../errors.js";
import type { Control, StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";
import { createLogger } from "../log.js";
import type { Attachable } from "../session/attachable.js";
import { authAttachable, type RegistryAuth, resolveCredentials } from "../session/auth.js";
import { fileSendAttachable } from "../session/filesend/file-send.js";
import { fileSyncAttachable } from "../session/filesync/file-sync.js";
import { secretsAttachable, validateSecrets } from "../session/secrets.js";
import { BuildSession } from "../session/session.js";
import { sshAttachable } from "../session/ssh.js";
import { type Locals, openLocals } from "./build-locals.js";
import type { BuildOptions, BuildResult } from "./build-options.js";
import { isDaemonAnswer } from "./call-error.js";
import { takeContextsInHand } from "./context-hold.js";
import type { BuildEvent } from "./events.js";
import { EventQueue } from "./event-queue.js";
import { checkDaemonSupports, type DaemonKind } from "./daemon-kind.js";
import { type ExportPlan, planOutputs } from "./outputs.js";
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
    const registryAuth = options.registryAuth ?? "docker-config";
    const session = startSession(target, options, { locals, registryAuth, outputTargets: plan.targets, emit });
    cleanups.push(() => session.close(daemonReachable));

    const exporters = plan.exporters;
    log(`solve ${ref} on ${target.address}: ${exporters.map((e) => e.type).join(", ") || "no export"}`);
    const dockerfile = () => ({ name: locals.dockerfileName, text: localDockerfileText(options, locals.dockerfileName) });
    plan.start();
    const solved = await solveWithProgress(target, ref, emit, signal, dockerfile, {
      ref,
      session: session.id,
      frontend: "dockerfile.v0",
      frontendAttrs: { ...frontendAttrs(options, locals.dockerfileName), ...locals.contextAttrs },
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
      const cause = plan.clientFailure() ?? session.clientFailure();
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

/** A build's session, served inside `Control.Session`. */
interface RunningSession {
  /** Goes in the SolveRequest. */
  id: string;
  /** Why a transfer failed on our side (an unreadable file): the real cause of the daemon's error. */
  clientFailure(): BuildKitNodeError | undefined;
  /** Ends it: a half-close the daemon answers (unless it is gone), then outputs still being written are awaited. */
  close(daemonReachable: boolean): Promise<void>;
}

/**
 * Opens the session the daemon calls back into during the solve: the build's
 * files, registry credentials, received outputs, secrets and SSH agents.
 * Only the caller's abort cuts it short; otherwise `close()` ends it, as the
 * Go client ends it.
 */
function startSession(
  target: BuildTarget,
  options: BuildOptions,
  parts: { locals: Locals; registryAuth: RegistryAuth; outputTargets: ExportPlan["targets"]; emit: (event: BuildEvent) => void },
): RunningSession {
  const fileSync = fileSyncAttachable(parts.locals.dirs, {
    onUnreadable: options.onUnreadable ?? "error",
    warn: (message) => parts.emit({ type: "warning", digest: "", message, detail: [] }),
  });
  const attachables: Attachable[] = [fileSync, authAttachable(parts.registryAuth)];
  const fileSend = parts.outputTargets.size > 0 ? fileSendAttachable(parts.outputTargets) : undefined;
  if (fileSend) attachables.push(fileSend);
  if (options.secrets) attachables.push(secretsAttachable(options.secrets));
  const ssh = options.ssh?.length ? sshAttachable(options.ssh) : undefined;
  if (ssh) attachables.push(ssh);

  const session = new BuildSession({ sharedKey: parts.locals.sharedKey, attachables });
  const tunnel = openSessionTunnel(target.openStream, session.headers, options.signal);
  const served = session.serve(tunnel.connection);
  return {
    id: session.id,
    clientFailure: () => fileSync.clientFailure(),
    async close(daemonReachable) {
      // Half-close: the daemon drops the session and ends the call (within milliseconds).
      tunnel.connection.end();
      if (daemonReachable) await settledWithin(tunnel.closed, SESSION_CLOSE_GRACE_MS);
      served.close();
      tunnel.connection.destroy();
      await ssh?.close();
      // Outputs cut short clean up after themselves; the build settles after that.
      if (fileSend) await settledWithin(fileSend.drained(), SESSION_CLOSE_GRACE_MS);
    },
  };
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
