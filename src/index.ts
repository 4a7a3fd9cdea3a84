// buildkit-node: a native Node.js client for BuildKit.
export { connect, type ConnectOptions } from "./buildkit/connect.js";
export {
  BuildKitClient,
  type BuildKitInfo,
  type BuildKitVersion,
  type CallOptions,
  type DiskUsageOptions,
  type PruneOptions,
  type PruneResult,
  type UsageRecord,
  type Worker,
} from "./buildkit/client.js";
export { BuildRun } from "./buildkit/build.js";
export type { BuildOptions, BuildResult, CacheEntry, ContextInput, Output } from "./buildkit/build-options.js";
export type {
  BuildEvent,
  LogLine,
  Progress,
  VertexCached,
  VertexCompleted,
  VertexErrored,
  VertexStarted,
  Warning,
} from "./buildkit/events.js";
export type { RegistryAuth, RegistryCredentials } from "./session/auth.js";
export type { SecretSource } from "./session/secrets.js";
export type { TarLimits } from "./session/filesync/tar-source.js";
export type { SshSource } from "./session/ssh.js";
export type { TlsOptions } from "./transport/tls-options.js";
export type { KeepaliveOptions } from "./transport/http2-connection.js";
export { AbortError, BuildError, BuildKitNodeError, TransportError, type ErrorCode } from "./errors.js";
export {
  createRenderer,
  resolveProgressMode,
  PROGRESS_MODES,
  type ProgressMode,
  type ProgressRenderer,
  type RendererOptions,
} from "./progress/index.js";
