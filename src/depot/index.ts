// buildkit-node/depot: Depot's API (projects, build lifecycle, machines).
export { DepotClient, type DepotClientOptions } from "./depot-client.js";
export type { CachePolicy, CreateProjectInput, DepotProjects, Hardware, Project, ProjectChanges, RequestOptions } from "./projects.js";
export type { CreateBuildInput, DepotBuild, DepotBuilds, GetBuildOptions } from "./builds.js";
export type { AcquireOptions, DepotMachine, MachineConnectOptions } from "./machine.js";
export type { MachinePlatform } from "./platform.js";
export type { DepotBuildOptions, DepotBuildResult } from "./depot-build.js";
export type { PlatformBuild } from "./image-index.js";
export type { PullOptions, PullResult, PushOptions, PushResult, SavedBuildOptions } from "./saved-builds.js";
export type { BuildRun } from "../buildkit/build.js";
export type { BuildEvent } from "../buildkit/events.js";
export type { BuildKitClient } from "../buildkit/client.js";
export { DepotError } from "./errors.js";
export { AbortError, BuildKitNodeError, TransportError, type ErrorCode } from "../errors.js";
