/**
 * How Docker names a registry host, in one place: the image-reference parser
 * (`src/registry/reference.ts`) and the credential lookups (`auth.ts`,
 * `docker-config.ts`) both read Docker Hub's names from here.
 */

/** The domain image names use for Docker Hub: `docker.io/library/alpine`. */
export const dockerHubDomain = "docker.io";

/** The host Docker Hub's registry API answers on (what BuildKit asks credentials for). */
export const dockerHubApiHost = "registry-1.docker.io";

/**
 * The key docker's `config.json`, `docker login` and credential helpers keep
 * Docker Hub's credentials under (docker/cli's `GetAuthConfigKey`; BuildKit's
 * auth provider maps `registry-1.docker.io` to it too).
 */
const dockerHubConfigKey = "https://index.docker.io/v1/";

/** Every name of Docker Hub a config key or a daemon request may use. */
const dockerHubAliases = new Set([dockerHubDomain, "index.docker.io", dockerHubApiHost]);

/**
 * The registry host of a config key, a daemon's request or an image's domain,
 * lower-cased, with scheme and path stripped: `https://host:5000/v1/` →
 * `host:5000`. Docker Hub's names (`registry-1.docker.io`, `index.docker.io`,
 * `docker.io`, its v1 URL) all become `docker.io`.
 */
export function registryHost(nameOrUrl: string): string {
  let rest = nameOrUrl.trim();
  const scheme = rest.indexOf("://");
  if (scheme >= 0) rest = rest.slice(scheme + 3);
  const host = (rest.split("/", 1)[0] ?? "").toLowerCase();
  return dockerHubAliases.has(host) ? dockerHubDomain : host;
}

/** The `config.json` key docker would store this registry's credentials under. */
export function credentialKey(nameOrUrl: string): string {
  const host = registryHost(nameOrUrl);
  return host === dockerHubDomain ? dockerHubConfigKey : host;
}
