import { BuildKitNodeError } from "../errors.js";
import { BuilderPlatform } from "../gen/depot/cli/v1/build_pb.js";

/** The two kinds of machine Depot runs. */
export type MachinePlatform = "amd64" | "arm64";

const accepted: Record<string, MachinePlatform> = {
  amd64: "amd64",
  "linux/amd64": "amd64",
  x86_64: "amd64",
  arm64: "arm64",
  "linux/arm64": "arm64",
  aarch64: "arm64",
};

/**
 * `amd64`, `linux/amd64`, `x86_64` → amd64; `arm64`, `linux/arm64`,
 * `aarch64` → arm64; anything else is INVALID_ARGUMENT. The result is the
 * one platform used for both GetBuildKitConnection and ReportBuildHealth
 * (Depot's Go SDK maps them differently and loses health for `linux/arm64`).
 */
export function normalizePlatform(platform: string): MachinePlatform {
  const normalized = typeof platform === "string" ? accepted[platform.trim().toLowerCase()] : undefined;
  if (!normalized) {
    throw new BuildKitNodeError(
      "INVALID_ARGUMENT",
      `unsupported Depot machine platform "${String(platform)}" (expected ${Object.keys(accepted).join(", ")})`,
    );
  }
  return normalized;
}

export function builderPlatform(platform: MachinePlatform): BuilderPlatform {
  return platform === "arm64" ? BuilderPlatform.ARM64 : BuilderPlatform.AMD64;
}
