/**
 * Typed progress of a build, made from BuildKit's Status stream (plus the
 * client's own steps, such as a push through the Docker Engine). Every
 * vertex event names its vertex by `digest` and `name`, e.g.
 * `[build 2/3] RUN make`.
 */
export type BuildEvent =
  | VertexStarted
  | VertexCompleted
  | VertexCached
  | VertexErrored
  | LogLine
  | Progress
  | Warning;

interface VertexEventBase {
  digest: string;
  /** e.g. `[internal] load build definition from Dockerfile`, `[2/3] RUN make`. */
  name: string;
  /** Set on multi-platform Depot builds: the platform this event belongs to. */
  platform?: string;
}

export interface VertexStarted extends VertexEventBase {
  type: "vertex.started";
  startedAt: Date;
  /** Digests of the vertexes this one depends on. */
  inputs: string[];
}

export interface VertexCompleted extends VertexEventBase {
  type: "vertex.completed";
  startedAt?: Date;
  completedAt: Date;
  durationMs?: number;
}

/** The vertex's result came from the cache; it did not run. */
export interface VertexCached extends VertexEventBase {
  type: "vertex.cached";
}

export interface VertexErrored extends VertexEventBase {
  type: "vertex.errored";
  error: string;
  startedAt?: Date;
  completedAt?: Date;
}

/** One line of a vertex's output (a RUN step's stdout or stderr). */
export interface LogLine extends VertexEventBase {
  type: "log";
  stream: "stdout" | "stderr";
  line: string;
  timestamp?: Date;
}

/** A progress bar inside a vertex: a layer pulled or pushed, a context sent. */
export interface Progress extends VertexEventBase {
  type: "progress";
  /** Which bar within the vertex, e.g. a layer digest or `transferring context:`. */
  id: string;
  current: number;
  /** 0 when unknown. */
  total: number;
  completed: boolean;
}

/** A warning from the frontend (Dockerfile lint, deprecated syntax). */
export interface Warning {
  type: "warning";
  digest: string;
  message: string;
  detail: string[];
  url?: string;
  /** Where in which file, when the warning points into one (1-based lines). */
  location?: { file: string; startLine: number; endLine: number };
  platform?: string;
}
