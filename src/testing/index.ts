// buildkit-node/testing: real parts for users' own tests.
export {
  startBuildKitFront,
  DEFAULT_FRONT_SERVER_NAME,
  type BuildKitFront,
  type BuildKitFrontOptions,
} from "./buildkit-front.js";
export {
  createCertificateAuthority,
  type CertificateAndKey,
  type CertificateAuthority,
  type IssueOptions,
} from "./certificates.js";
export {
  startLocalDepot,
  type LocalBuildRecord,
  type LocalBuildResult,
  type LocalDepot,
  type LocalDepotFaults,
  type LocalDepotOptions,
  type LocalFaultCode,
  type LocalHardware,
  type LocalMachineRecord,
  type LocalMachineStopReason,
  type LocalPlatform,
  type LocalProject,
} from "./local-depot.js";
export { startFaultRelay, type FaultMode, type FaultRelay, type FaultRelayOptions } from "./fault-relay.js";
