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
  DEFAULT_SAVED_IMAGE_REGISTRY,
  type LocalBuildOptions,
  type LocalBuildRecord,
  type LocalBuildResult,
  type LocalBuildStep,
  type LocalDepot,
  type LocalDepotClock,
  type LocalDepotFaults,
  type LocalDepotOptions,
  type LocalFaultCode,
  type LocalHardware,
  type LocalImagePull,
  type LocalMachineRecord,
  type LocalMachineStopReason,
  type LocalPlatform,
  type LocalProject,
  type LocalPushRecord,
  type LocalSavedImage,
  type LocalStatusReports,
  type LocalStepLog,
  type LocalTimedStep,
} from "./local-depot.js";
export { startFaultRelay, type FaultMode, type FaultRelay, type FaultRelayOptions } from "./fault-relay.js";
export {
  startRegistryFront,
  type AccessDecision,
  type RegistryFront,
  type RegistryFrontOptions,
  type RegistryRequest,
  type RegistryTarget,
} from "./registry-front.js";
