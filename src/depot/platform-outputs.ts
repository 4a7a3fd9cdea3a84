import type { BuildResult, Output } from "../buildkit/build-options.js";
import { BuildKitNodeError } from "../errors.js";
import { parseImageReference } from "../registry/reference.js";

/**
 * How each platform's image reaches the registry before one index names
 * them all. `by-digest`: pushed by digest, no tag left behind (what buildx
 * and Depot do; needs BuildKit's `image` exporter). `helper-tags`: pushed
 * under `<tag>-<os>-<arch>` (dockerd's embedded BuildKit pushes through the
 * Engine API, which only pushes tags); those tags stay in the registry.
 */
export type PlatformPush = "by-digest" | "helper-tags";

/** The image names a set of outputs asks for, each once. */
export function requestedImageNames(outputs: Output[]): string[] {
  return [...new Set(outputs.flatMap((o) => (o.type === "image" ? o.name.split(",").map((n) => n.trim()).filter(Boolean) : [])))];
}

/** Several platforms can go to a registry (one index) or to per-platform local directories. */
export function checkMultiPlatformOutputs(outputs: Output[]): void {
  for (const output of outputs) {
    if (output.type === "image" && output.push) continue;
    if (output.type === "local") continue;
    throw new BuildKitNodeError(
      "INVALID_ARGUMENT",
      `a ${output.type} output${"load" in output ? " with load" : ""} cannot hold several platforms; push an image, or build one platform at a time`,
    );
  }
}

/** One platform's outputs: its image pushed by digest or under helper tags, its local files in a subdirectory of their own. */
export function platformOutputs(outputs: Output[], platform: string, push: PlatformPush): Output[] {
  return outputs.map((output) => {
    if (output.type === "image") {
      if (push === "by-digest") return { ...output, pushByDigest: true };
      return { ...output, name: output.name.split(",").map((n) => helperTag(n.trim(), platform)).join(",") };
    }
    if (output.type === "local") return { ...output, dest: `${output.dest}/${platform.replaceAll("/", "_")}` };
    return output;
  });
}

/** The digest of `platform`'s image for the requested `name`, from what its build pushed. */
export function platformDigest(name: string, platform: string, result: BuildResult, push: PlatformPush): string {
  const pushedAs = push === "by-digest" ? repositoryOf(name) : helperTag(name, platform);
  const pushed = result.pushed.find((p) => (push === "by-digest" ? repositoryOf(p.name) === pushedAs : p.name === pushedAs));
  if (!pushed?.digest) throw new BuildKitNodeError("INTERNAL", `no digest was reported for the ${platform} image of ${name}`);
  return pushed.digest;
}

/** `host/repo:tag` → `host/repo:tag-linux-arm64`. */
function helperTag(name: string, platform: string): string {
  const image = parseImageReference(name);
  return `${repositoryOf(name)}:${image.tag ?? "latest"}-${platform.replaceAll("/", "-")}`;
}

/** One repository, however its name was written (`app`, `docker.io/library/app:1`, `host/app@sha256:…`). */
function repositoryOf(name: string): string {
  const { domain, repository } = parseImageReference(name);
  return `${domain}/${repository}`;
}
