import type { RegistryAuth, RegistryCredentials } from "../session/auth.js";
import { resolveCredentials } from "../session/auth.js";
import { BuildKitNodeError } from "../errors.js";
import { registryHost } from "../session/registry-host.js";

/** Depot's registry, where saved builds live when Depot names no other. */
export const DEPOT_REGISTRY = "registry.depot.dev";

/** Where Depot keeps a saved build, and the credentials it issued for pushing there. */
export interface SavedImage {
  /** Every name the build's image is saved under; the first is the build's own (`<registry>/<project>:<build>`). */
  tags: string[];
  /** Credentials by registry host (never logged or printed). */
  credentials: Map<string, RegistryCredentials>;
}

/**
 * What CreateBuild answered for a saved build: `additional_tags` (those to
 * push) and `additional_credentials` (base64 `user:password` per host).
 * Without them, what the depot CLI falls back to: `<registry>/<project>:<build>`
 * plus one name per save tag, and `x-token:<build token>` for the registry
 * (Depot's own unless `registry` names the one Depot said it uses).
 */
export function savedImage(
  reply: { additionalTags: { tag: string; push: boolean }[]; additionalCredentials: { host: string; token: string }[] },
  build: { id: string; token: string; projectId: string },
  saveTags: readonly string[],
  registry = DEPOT_REGISTRY,
): SavedImage {
  const tags = reply.additionalTags.filter((t) => t.push && t.tag).map((t) => t.tag);
  if (tags.length === 0) {
    const repository = `${registry}/${build.projectId}`;
    tags.push(`${repository}:${build.id}`, ...saveTags.map((tag) => `${repository}:${tag}`));
  }
  const credentials = new Map<string, RegistryCredentials>();
  for (const { host, token } of reply.additionalCredentials) {
    const decoded = Buffer.from(token, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (!host || colon < 0) throw new BuildKitNodeError("INTERNAL", `Depot CreateBuild returned malformed registry credentials${host ? ` for ${host}` : ""}`);
    credentials.set(registryHost(host), { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) });
  }
  if (credentials.size === 0) credentials.set(registryHost(registry), { username: "x-token", password: build.token });
  return { tags, credentials };
}

/** `base` with Depot's credentials for its own registries taking precedence. */
export function withDepotCredentials(base: RegistryAuth | undefined, credentials: ReadonlyMap<string, RegistryCredentials>): RegistryAuth {
  if (credentials.size === 0) return base ?? "docker-config";
  return async (host) => credentials.get(registryHost(host)) ?? (await resolveCredentials(base ?? "docker-config", host));
}
