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
export type { TlsOptions } from "./transport/tls-options.js";
export { BuildKitNodeError, TransportError, type ErrorCode } from "./errors.js";
