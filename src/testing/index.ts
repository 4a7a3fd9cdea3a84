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
