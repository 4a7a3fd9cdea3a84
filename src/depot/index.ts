// buildkit-node/depot: Depot's API (projects, build lifecycle, machines).
// The clients land with the Depot orchestration work; until then this entry
// point exports only the shared error types, so that the package's export
// map is stable from the first release.
export { BuildKitNodeError, TransportError, type ErrorCode } from "../errors.js";
