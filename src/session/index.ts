// The session layer: what the client serves to the daemon during a build.
export type { Attachable } from "./attachable.js";
export { BuildSession, type SessionOptions } from "./session.js";
