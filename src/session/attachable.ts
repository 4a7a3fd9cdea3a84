import type { Handler } from "./grpc-server.js";

/**
 * A feature the client serves to the daemon inside a build session (files,
 * credentials, secrets, SSH): a few gRPC methods by full path. The session
 * announces every method of every attachable in its headers.
 */
export interface Attachable {
  readonly routes: ReadonlyMap<string, Handler>;
}
