// buildkit-node: a native Node.js client for BuildKit.
export { connect, type ConnectOptions } from "./buildkit/connect.js";
// The client and a run come from connect() and build(); their classes are
// exported as types only, so that nobody constructs one by hand.
export type {
  BuildKitClient,
  BuildKitFeatures,
  BuildKitInfo,
  BuildKitVersion,
  CallOptions,
  DiskUsageOptions,
  PruneOptions,
  PruneResult,
  UsageRecord,
  Worker,
} from "./buildkit/client.js";
export type { BuildRun } from "./buildkit/build.js";
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
export type { CredentialLookup, RegistryAuth, RegistryAuthOptions, RegistryCredentials } from "./session/auth.js";
export { RegistryClient, type RegistryCallOptions, type RegistryClientOptions } from "./registry/registry-client.js";
export { formatImageReference, parseImageReference, withDigest, withTag, type ImageReference } from "./registry/reference.js";
export { RegistryError } from "./registry/errors.js";
export { MediaType, type Descriptor, type ImageIndex, type ImageManifest, type Manifest, type Platform } from "./registry/manifest.js";
export type { BlobSource, PushBlobOptions, PushBlobResult } from "./registry/blob-upload.js";
export type { CopyImageOptions, CopyImageResult, CopyProgress } from "./registry/copy-image.js";
export type { ImageArchiveOptions, ImageArchiveResult } from "./registry/image-archive.js";
export type { IndexSource, PushIndexOptions, PushIndexResult } from "./registry/push-index.js";
export { loadRegistryImage, type LoadRegistryImageOptions, type LoadRegistryImageResult } from "./buildkit/registry-load.js";
export type { SecretSource } from "./session/secrets.js";
export type { TarLimits } from "./session/filesync/tar-source.js";
export type { SshSource } from "./session/ssh.js";
export type { TlsOptions } from "./transport/tls-options.js";
export type { KeepaliveOptions } from "./transport/http2-connection.js";
export { AbortError, BuildError, BuildKitNodeError, TransportError, type BuildErrorSource, type ErrorCode } from "./errors.js";
export {
  createRenderer,
  resolveProgressMode,
  PROGRESS_MODES,
  type ProgressMode,
  type ProgressRenderer,
  type RendererOptions,
} from "./progress/index.js";
