import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";
import { StringDecoder } from "node:string_decoder";
import type { BuildEvent } from "./events.js";

/** Lines of each vertex's output kept for a BuildError. */
const LOG_TAIL_LINES = 20;

interface VertexState {
  name: string;
  started?: Date;
  completed?: Date;
  cached: boolean;
  error: string;
  announcedStart: boolean;
  announcedEnd: boolean;
  tail: string[];
}

export interface FailedVertex {
  digest: string;
  name: string;
  error: string;
  logTail: string[];
}

/**
 * Turns BuildKit's Status updates into BuildEvents: vertexes are merged by
 * digest and each change announced once; log chunks (which may split lines
 * and UTF-8 characters anywhere) become whole lines per vertex and stream.
 */
export class StatusTracker {
  readonly #vertexes = new Map<string, VertexState>();
  readonly #lines = new Map<string, { decoder: StringDecoder; partial: string }>();
  readonly #platform: string | undefined;

  constructor(options: { platform?: string } = {}) {
    this.#platform = options.platform;
  }

  update(status: StatusResponse): BuildEvent[] {
    const events: BuildEvent[] = [];
    // A batch may start a vertex, report its progress and logs, and end it:
    // ends go last, so nothing of a vertex follows its end.
    const ends: BuildEvent[] = [];
    const tag = this.#platform ? { platform: this.#platform } : {};
    for (const v of status.vertexes) {
      const state = this.#vertex(v.digest, v.name);
      // Each update carries the vertex's whole state. A vertex can run again
      // (BuildKit reports "load build context" done at once, then restarts
      // it for the real transfer): a start without a completion after an
      // announced end is a new run.
      if (v.started && !v.completed && state.announcedEnd) {
        state.announcedStart = false;
        state.announcedEnd = false;
        state.completed = undefined;
      }
      state.cached = v.cached;
      if (v.started) state.started = date(v.started);
      if (v.completed) state.completed = date(v.completed);
      if (v.error) state.error = v.error;
      const base = { digest: v.digest, name: state.name, ...tag };
      const ended = state.completed !== undefined || state.error !== "";
      if (state.started && !state.announcedStart && !(ended && state.cached)) {
        state.announcedStart = true;
        events.push({ type: "vertex.started", ...base, startedAt: state.started, inputs: [...v.inputs] });
      }
      if (ended && !state.announcedEnd) {
        state.announcedEnd = true;
        const times = {
          ...(state.started ? { startedAt: state.started } : {}),
          ...(state.completed ? { completedAt: state.completed } : {}),
        };
        if (state.error) ends.push({ type: "vertex.errored", ...base, error: state.error, ...times });
        else if (state.cached) ends.push({ type: "vertex.cached", ...base });
        else {
          const durationMs = state.started && state.completed ? state.completed.getTime() - state.started.getTime() : undefined;
          ends.push({ type: "vertex.completed", ...base, completedAt: state.completed!, ...times, ...(durationMs !== undefined ? { durationMs } : {}) });
        }
      }
    }
    for (const s of status.statuses) {
      const name = this.#vertexes.get(s.vertex)?.name ?? "";
      events.push({
        type: "progress",
        digest: s.vertex,
        name,
        id: s.id,
        current: Number(s.current),
        total: Number(s.total),
        completed: s.completed !== undefined,
        ...tag,
      });
    }
    for (const log of status.logs) {
      const stream = log.stream === 2n ? "stderr" : "stdout";
      for (const line of this.#splitLines(log.vertex, stream, log.msg)) {
        events.push(this.#logEvent(log.vertex, stream, line, log.timestamp));
      }
    }
    for (const w of status.warnings) {
      const range = w.ranges[0];
      events.push({
        type: "warning",
        digest: w.vertex,
        message: utf8(w.short),
        detail: w.detail.map(utf8),
        ...(w.url ? { url: w.url } : {}),
        ...(w.info && range ? { location: { file: w.info.filename, startLine: range.start?.line ?? 0, endLine: range.end?.line ?? 0 } } : {}),
        ...tag,
      });
    }
    return events.concat(ends);
  }

  /** The unterminated last lines of every log, once the build is over. */
  flush(): BuildEvent[] {
    const events: BuildEvent[] = [];
    for (const [key, buffer] of this.#lines) {
      const rest = buffer.partial + buffer.decoder.end();
      buffer.partial = "";
      if (rest === "") continue;
      const [digest, stream] = splitKey(key);
      events.push(this.#logEvent(digest, stream, rest.replace(/\r$/, ""), undefined));
    }
    return events;
  }

  /**
   * The vertex that failed, with its log tail: the one `digest` names (the
   * daemon's errdefs.Vertex) when it is known, else the last with an error.
   */
  failedVertex(digest?: string): FailedVertex | undefined {
    const named = digest ? this.#vertexes.get(digest) : undefined;
    if (digest && named) return { digest, name: named.name, error: named.error, logTail: [...named.tail] };
    let failed: FailedVertex | undefined;
    for (const [digest, state] of this.#vertexes) {
      if (state.error) failed = { digest, name: state.name, error: state.error, logTail: [...state.tail] };
    }
    return failed;
  }

  #vertex(digest: string, name: string): VertexState {
    let state = this.#vertexes.get(digest);
    if (!state) {
      state = { name, cached: false, error: "", announcedStart: false, announcedEnd: false, tail: [] };
      this.#vertexes.set(digest, state);
    }
    if (name) state.name = name;
    return state;
  }

  #splitLines(digest: string, stream: "stdout" | "stderr", chunk: Uint8Array): string[] {
    const key = `${stream}\u0000${digest}`;
    let buffer = this.#lines.get(key);
    if (!buffer) {
      buffer = { decoder: new StringDecoder("utf8"), partial: "" };
      this.#lines.set(key, buffer);
    }
    const text = buffer.partial + buffer.decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    const lines = text.split("\n");
    buffer.partial = lines.pop() ?? "";
    return lines.map((line) => line.replace(/\r$/, ""));
  }

  #logEvent(digest: string, stream: "stdout" | "stderr", line: string, timestamp: Timestamp | undefined): BuildEvent {
    const state = this.#vertex(digest, "");
    state.tail.push(line);
    if (state.tail.length > LOG_TAIL_LINES) state.tail.shift();
    return {
      type: "log",
      digest,
      name: state.name,
      stream,
      line,
      ...(timestamp ? { timestamp: date(timestamp) } : {}),
      ...(this.#platform ? { platform: this.#platform } : {}),
    };
  }
}

function splitKey(key: string): [string, "stdout" | "stderr"] {
  const [stream, digest] = key.split("\u0000") as ["stdout" | "stderr", string];
  return [digest, stream];
}

function date(t: Timestamp): Date {
  return timestampDate(t);
}

function utf8(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
}
