import { createHash } from "node:crypto";
import { BuildKitNodeError } from "../errors.js";
import type { RegistryCredentials } from "../session/auth.js";

/** A manifest's descriptor, as an image index lists it. */
export interface ManifestDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface ImageReference {
  /** e.g. `ghcr.io`, `127.0.0.1:5000`; `registry-1.docker.io` for Docker Hub. */
  host: string;
  /** e.g. `acme/app`; `library/alpine` on Docker Hub. */
  repository: string;
  /** A tag or a digest. */
  reference: string;
}

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

/**
 * Just enough of the registry HTTP API to assemble a multi-platform image:
 * read a manifest's descriptor, put an index. Authenticates like Docker
 * does: Basic, or a Bearer token fetched from the realm a 401 names.
 * Plain HTTP only for loopback registries.
 */
export class RegistryClient {
  readonly #credentials: (host: string) => Promise<RegistryCredentials | undefined>;
  readonly #tokens = new Map<string, string>();

  constructor(credentials: (host: string) => Promise<RegistryCredentials | undefined>) {
    this.#credentials = credentials;
  }

  async manifestDescriptor(image: ImageReference, signal?: AbortSignal): Promise<ManifestDescriptor> {
    const response = await this.#fetch(image, "GET", { headers: { Accept: MANIFEST_TYPES.join(", ") }, signal }, "pull");
    const body = Buffer.from(await response.arrayBuffer());
    const digest = response.headers.get("docker-content-digest") ?? `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const mediaType = response.headers.get("content-type")?.split(";")[0] ?? (JSON.parse(body.toString()) as { mediaType?: string }).mediaType ?? "";
    return { mediaType, digest, size: body.length };
  }

  /** Puts a manifest (or index) under a tag; resolves with its digest. */
  async putManifest(image: ImageReference, mediaType: string, manifest: Uint8Array, signal?: AbortSignal): Promise<string> {
    const response = await this.#fetch(image, "PUT", { headers: { "Content-Type": mediaType }, body: manifest, signal }, "pull,push");
    await response.arrayBuffer();
    return response.headers.get("docker-content-digest") ?? `sha256:${createHash("sha256").update(manifest).digest("hex")}`;
  }

  async #fetch(image: ImageReference, method: string, init: { headers: Record<string, string>; body?: Uint8Array; signal?: AbortSignal | undefined }, actions: string): Promise<Response> {
    const url = `${schemeFor(image.host)}://${image.host}/v2/${image.repository}/manifests/${image.reference}`;
    const what = `${method} ${image.host}/${image.repository}:${image.reference}`;
    const send = (authorization?: string) =>
      fetch(url, {
        method,
        headers: { ...init.headers, ...(authorization ? { Authorization: authorization } : {}) },
        ...(init.body ? { body: init.body } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      }).catch((err: unknown) => {
        throw new BuildKitNodeError("UNAVAILABLE", `${what}: ${(err as Error).message}`, { cause: err });
      });
    const tokenKey = `${image.host}/${image.repository}/${actions}`;
    let response = await send(this.#tokens.get(tokenKey));
    if (response.status === 401) {
      await response.arrayBuffer();
      const authorization = await this.#authorize(image, response.headers.get("www-authenticate") ?? "", actions, what);
      this.#tokens.set(tokenKey, authorization);
      response = await send(authorization);
    }
    if (!response.ok) {
      const text = (await response.text()).slice(0, 300);
      const code = response.status === 401 || response.status === 403 ? "UNAUTHENTICATED" : response.status === 404 ? "NOT_FOUND" : "UNKNOWN";
      throw new BuildKitNodeError(code, `${what}: the registry answered ${response.status}${text ? `: ${text}` : ""}`);
    }
    return response;
  }

  /** The Authorization header a 401's challenge asks for. */
  async #authorize(image: ImageReference, challenge: string, actions: string, what: string): Promise<string> {
    const credentials = await this.#credentials(image.host);
    const basic =
      credentials?.username !== undefined ? `Basic ${Buffer.from(`${credentials.username}:${credentials.password ?? ""}`).toString("base64")}` : undefined;
    if (/^basic\b/i.test(challenge)) {
      if (!basic) throw new BuildKitNodeError("UNAUTHENTICATED", `${what}: the registry wants credentials and none are configured for ${image.host}`);
      return basic;
    }
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
    if (!/^bearer\b/i.test(challenge) || !params.realm) {
      throw new BuildKitNodeError("UNAUTHENTICATED", `${what}: unsupported registry challenge`);
    }
    const tokenUrl = new URL(params.realm);
    if (params.service) tokenUrl.searchParams.set("service", params.service);
    tokenUrl.searchParams.set("scope", `repository:${image.repository}:${actions}`);
    const headers: Record<string, string> = basic ? { Authorization: basic } : {};
    if (credentials?.identityToken) {
      // An identity token is a refresh token for the OAuth form of the flow.
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: credentials.identityToken, service: params.service ?? "", scope: `repository:${image.repository}:${actions}`, client_id: "buildkit-node" });
      const reply = await fetch(params.realm, { method: "POST", body: form });
      if (!reply.ok) throw new BuildKitNodeError("UNAUTHENTICATED", `${what}: the token service answered ${reply.status}`);
      return `Bearer ${((await reply.json()) as { access_token: string }).access_token}`;
    }
    const reply = await fetch(tokenUrl, { headers });
    if (!reply.ok) throw new BuildKitNodeError("UNAUTHENTICATED", `${what}: the token service answered ${reply.status}`);
    const body = (await reply.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new BuildKitNodeError("UNAUTHENTICATED", `${what}: the token service gave no token`);
    return `Bearer ${token}`;
  }
}

/** Splits `host/repo[:tag|@digest]`, as Docker reads image names. */
export function parseImageReference(name: string): ImageReference {
  const at = name.indexOf("@");
  const withoutDigest = at >= 0 ? name.slice(0, at) : name;
  const slash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.lastIndexOf(":");
  const tagged = colon > slash;
  const path = tagged ? withoutDigest.slice(0, colon) : withoutDigest;
  const reference = at >= 0 ? name.slice(at + 1) : tagged ? withoutDigest.slice(colon + 1) : "latest";
  const first = path.split("/")[0]!;
  const hasHost = path.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  const host = hasHost ? first : "registry-1.docker.io";
  let repository = hasHost ? path.slice(first.length + 1) : path;
  if (!hasHost && !repository.includes("/")) repository = `library/${repository}`;
  return { host, repository, reference };
}

function schemeFor(host: string): "http" | "https" {
  return /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host) ? "http" : "https";
}
