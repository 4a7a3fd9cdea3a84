// A failed solve as a BuildError that reads as buildx prints it. The daemon's
// status carries typed details (BuildKit's errdefs): the Dockerfile with the
// ranges of the failing instruction, the failing vertex, a RUN step's exit
// code. They are decoded with our own protobuf schema, never guessed from
// text: a number a RUN step printed is not a Dockerfile line.
import { create, type DescMessage, fromBinary, fromJsonString, type MessageShape } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { BuildError, type BuildErrorSource } from "../errors.js";
import { type Source, SourceSchema, VertexSchema } from "../gen/errdefs/errdefs_pb.js";
import { ExitMessageSchema } from "../gen/moby/buildkit/v1/frontend/exit_pb.js";
import type { BuildOptions } from "./build-options.js";
import { solveFailureCode } from "./failure-code.js";
import type { FailedVertex } from "./status-tracker.js";

/** Lines of a failed step's output the message ends with (`logTail` keeps more). */
const MESSAGE_TAIL_LINES = 5;
/** A Dockerfile larger than this is not read back for an excerpt. */
const MAX_LOCAL_DOCKERFILE_BYTES = 1024 * 1024;

/** What BuildKit's status details say about a failed solve. */
export interface SolveErrorDetails {
  /** Each errdefs.Source: the file (with its text) and the failing ranges. */
  sources: Source[];
  /** The errdefs.Vertex: the digest of the vertex that failed. */
  vertex: string | undefined;
  /** The gateway's ExitMessage: a RUN step's exit code. */
  exitCode: number | undefined;
}

/**
 * Decodes the details BuildKit attaches to a failed call. Each is an Any
 * whose type is the name BuildKit registered it under; `+json` means the
 * value is Go's JSON encoding of the message (what every BuildKit from v0.8
 * to v0.24 sends), anything else is protobuf. Details this client does not
 * use (stack traces, the frontend's name) and details it cannot read are
 * skipped: they only ever add to the daemon's message.
 */
export function solveErrorDetails(err: ConnectError): SolveErrorDetails {
  const details: SolveErrorDetails = { sources: [], vertex: undefined, exitCode: undefined };
  for (const detail of err.details) {
    // Details from the wire are { type, value }; others were made in this process.
    if (!("type" in detail) || !(detail.value instanceof Uint8Array)) continue;
    const json = detail.type.endsWith("+json");
    const name = json ? detail.type.slice(0, -"+json".length) : detail.type;
    switch (name) {
      case "errdefs.Source": {
        const source = decode(SourceSchema, detail.value, json);
        if (source) details.sources.push(source);
        break;
      }
      case "errdefs.Vertex":
        details.vertex ??= decode(VertexSchema, detail.value, json)?.digest || undefined;
        break;
      case "gatewayapi.ExitMessage": {
        const exit = decode(ExitMessageSchema, detail.value, json);
        if (exit) details.exitCode ??= exit.Code;
        break;
      }
    }
  }
  return details;
}

function decode<D extends DescMessage>(schema: D, value: Uint8Array, json: boolean): MessageShape<D> | undefined {
  try {
    return json ? fromJsonString(schema, new TextDecoder().decode(value), { ignoreUnknownFields: true }) : fromBinary(schema, value);
  } catch {
    return undefined; // unreadable: the daemon's message still says what failed
  }
}

/** What the build knows beyond the daemon's answer. */
export interface SolveFailureContext {
  /** The failed vertex with its log tail: the one `digest` names, else the last that reported an error. */
  failedVertex(digest?: string): FailedVertex | undefined;
  /** The Dockerfile's name and, when the client has it, its text. */
  dockerfile(): { name: string; text: string | undefined };
}

/**
 * The BuildError for a solve the daemon answered with a failure, coded by
 * `solveFailureCode` (BUILD_FAILED, or a registry's refusal).
 */
export function solveError(err: ConnectError, context: SolveFailureContext): BuildError {
  const daemonMessage = err.rawMessage;
  const details = solveErrorDetails(err);
  const failed = context.failedVertex(details.vertex);
  const exitCode = details.exitCode ?? exitCodeInMessage(daemonMessage);
  const sources = details.sources.length > 0 ? details.sources : parseErrorSource(daemonMessage, exitCode, context);
  // Several sources are rare (a frontend wrapping another's error): the first that points somewhere names the place.
  const source = sources.map(sourceLocation).find((s) => s !== undefined);

  const summary = failed ? `build failed at "${failed.name}": ${daemonMessage}` : `build failed: ${daemonMessage}`;
  const tail = (failed?.logTail ?? []).slice(-MESSAGE_TAIL_LINES).map((line) => `\n  > ${line}`).join("");
  return new BuildError({
    message: source?.excerpt ? `${source.excerpt}\n${summary}${tail}` : `${summary}${tail}`,
    daemonMessage,
    code: solveFailureCode(daemonMessage, exitCode),
    ...(failed ? { step: { digest: failed.digest, name: failed.name } } : {}),
    logTail: failed?.logTail ?? [],
    ...(exitCode !== undefined ? { exitCode } : {}),
    ...(source ? { source } : {}),
    cause: err,
  });
}

/** A RUN step's exit code, at the end of the daemon's message (BuildKit before v0.9 sends no ExitMessage). */
function exitCodeInMessage(message: string): number | undefined {
  const code = /: exit code: (\d+)$/.exec(message)?.[1];
  return code === undefined ? undefined : Number(code);
}

/**
 * BuildKit before v0.9 (dockerd 20.10's v0.8) sends no details; its parser
 * still names the line of a parse error, in a fixed form:
 * `…: dockerfile parse error line 3: unknown instruction: BOGUS` (v0.9 on:
 * `dockerfile parse error on line 3`). A step that ran and failed has an
 * exit code instead, and its command (which may say anything) is not read.
 */
function parseErrorSource(message: string, exitCode: number | undefined, context: SolveFailureContext): Source[] {
  if (exitCode !== undefined) return [];
  const line = /(?:^|: )dockerfile parse error (?:on )?line (\d+): /.exec(message)?.[1];
  if (!line) return [];
  const { name, text } = context.dockerfile();
  const position = { line: Number(line), character: 0 };
  return [
    create(SourceSchema, {
      info: { filename: name, data: new TextEncoder().encode(text ?? ""), language: "Dockerfile" },
      ranges: [{ start: position, end: position }],
    }),
  ];
}

/** Where a Source points, with buildx's excerpt of it. */
function sourceLocation(source: Source): BuildErrorSource | undefined {
  const ranges = source.ranges.map((r) => {
    const start = r.start?.line ?? 0;
    return { start, end: Math.max(start, r.end?.line ?? 0) };
  });
  const first = Math.min(...ranges.map((r) => r.start));
  const last = Math.max(...ranges.map((r) => r.end));
  if (ranges.length === 0 || first < 1) return undefined;
  const file = source.info?.filename || "Dockerfile";
  const data = source.info?.data ?? new Uint8Array();
  const lines = new TextDecoder().decode(data).split("\n");
  const known = data.length > 0 && first <= lines.length;
  return {
    file,
    line: first,
    endLine: last,
    text: known ? lines.slice(first - 1, Math.min(last, lines.length)).join("\n") : undefined,
    excerpt: known ? excerpt(file, lines, first, Math.min(last, lines.length), ranges) : undefined,
  };
}

/**
 * buildx's picture of a source range: the file and first line, a rule, the
 * failing lines marked `>>>` with the lines around them (two on each side of
 * a single line, one around several), a rule.
 */
function excerpt(file: string, lines: string[], first: number, last: number, ranges: { start: number; end: number }[]): string {
  let from = first;
  let to = last;
  // BuildKit's own padding loop: each round widens both sides by one where
  // the file allows, and costs one more than it widened.
  const pad = first === last ? 4 : 2;
  for (let spent = 0; spent < pad; spent++) {
    const widened = (from > 1 ? 1 : 0) + (to < lines.length ? 1 : 0);
    if (widened === 0) break; // the whole file is shown
    if (from > 1) from--;
    if (to < lines.length) to++;
    spent += widened;
  }
  const failing = (n: number) => ranges.some((r) => r.start <= n && n <= r.end);
  const shown: string[] = [];
  for (let n = from; n <= to; n++) shown.push(` ${String(n).padStart(3)} | ${failing(n) ? ">>>" : "   "} ${lines[n - 1]}`.trimEnd());
  return [`${file}:${first}`, "--------------------", ...shown, "--------------------"].join("\n");
}

/**
 * The Dockerfile as the client has it, for a daemon that sends no source:
 * the text given in `dockerfileContent`, the file in an in-memory context,
 * or the file on disk. A tarball context was streamed, not kept: no text.
 */
export function localDockerfileText(options: BuildOptions, name: string): string | undefined {
  if (options.dockerfileContent !== undefined) return options.dockerfileContent;
  const context = options.context;
  if (typeof context === "string") {
    const path = resolve(context, options.dockerfile ?? "Dockerfile");
    try {
      return statSync(path).size <= MAX_LOCAL_DOCKERFILE_BYTES ? readFileSync(path, "utf8") : undefined;
    } catch {
      return undefined; // gone since the build read it
    }
  }
  if ("files" in context) {
    const content = context.files[name];
    return typeof content === "string" ? content : content ? new TextDecoder().decode(content) : undefined;
  }
  return undefined;
}
