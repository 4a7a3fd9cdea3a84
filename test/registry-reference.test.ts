// The image-reference parser against Docker's own normalisation cases
// (distribution/reference's ParseNormalizedNamed), and the registry-host
// names the credential lookups share with it. No daemon needed.
import { describe, expect, it } from "vitest";
import { BuildKitNodeError } from "../src/errors.js";
import { parseChallenge } from "../src/registry/authorizer.js";
import { MediaType, isAttestation, parsePlatform, platformMatches } from "../src/registry/manifest.js";
import { formatImageReference, parseImageReference, withDigest, withTag } from "../src/registry/reference.js";
import { isLoopback } from "../src/registry/registry-http.js";
import { credentialKey, registryHost } from "../src/session/registry-host.js";

const digest = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

describe("parseImageReference: Docker Hub's names", () => {
  it.each([
    ["alpine", "library/alpine", undefined],
    ["alpine:3.20", "library/alpine", "3.20"],
    ["library/alpine", "library/alpine", undefined],
    ["docker.io/alpine", "library/alpine", undefined],
    ["docker.io/library/alpine:edge", "library/alpine", "edge"],
    ["index.docker.io/alpine", "library/alpine", undefined],
    ["index.docker.io/x/y", "x/y", undefined],
    ["dmcgowan/myapp:latest", "dmcgowan/myapp", "latest"],
    ["library/foo/bar", "library/foo/bar", undefined],
    ["store/foo/bar", "store/foo/bar", undefined],
    ["test_com/foo", "test_com/foo", undefined],
    ["docker/migrator", "docker/migrator", undefined],
    ["ubuntu-12.04-base", "library/ubuntu-12.04-base", undefined],
    ["dbcc1", "library/dbcc1", undefined],
    // One component without a slash is a repository, even if it looks like a host (Docker's FIXME).
    ["192.168.0.1", "library/192.168.0.1", undefined],
    ["192.168.0.1:80", "library/192.168.0.1", "80"],
    ["localhost:5000", "library/localhost", "5000"],
  ])("%s → docker.io/%s", (text, repository, tag) => {
    const ref = parseImageReference(text);
    expect(ref).toMatchObject({ domain: "docker.io", host: "registry-1.docker.io", repository, reference: tag ?? "latest" });
    expect(ref.tag).toBe(tag);
    expect(ref.digest).toBeUndefined();
  });

  it("keeps registry-1.docker.io as written, as Docker does (its API host; credentials still Docker Hub's)", () => {
    const ref = parseImageReference("registry-1.docker.io/x");
    expect(ref).toMatchObject({ domain: "registry-1.docker.io", host: "registry-1.docker.io", repository: "x" });
    expect(credentialKey(ref.domain)).toBe("https://index.docker.io/v1/");
  });
});

describe("parseImageReference: other registries", () => {
  it.each([
    ["localhost:5000/a", "localhost:5000", "a"],
    ["localhost/a/b", "localhost", "a/b"],
    ["127.0.0.1:5000/docker/docker", "127.0.0.1:5000", "docker/docker"],
    ["127.0.0.1:5000/debian", "127.0.0.1:5000", "debian"],
    ["192.168.0.1:8/debian", "192.168.0.1:8", "debian"],
    ["example.com/private/moonbase", "example.com", "private/moonbase"],
    ["example.com:8000/privatebase", "example.com:8000", "privatebase"],
    ["test.com/foo", "test.com", "foo"],
    ["test-com:8080/foo", "test-com:8080", "foo"],
    ["xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"],
    ["ghcr.io/acme/app", "ghcr.io", "acme/app"],
    ["[fc00::1]:5000/docker", "[fc00::1]:5000", "docker"],
    ["[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000", "library/debian"],
    // An upper-case first component can only be a host: repositories are lower-case.
    ["Docker/docker", "Docker", "docker"],
    ["FOO/bar", "FOO", "bar"],
    // A 64-hex path is fine once a host says it is a name.
    [`docker.io/${digest.slice(7)}`, "docker.io", `library/${digest.slice(7)}`],
  ])("%s → %s / %s", (text, domain, repository) => {
    const ref = parseImageReference(text);
    expect(ref).toMatchObject({ domain, host: domain === "docker.io" ? "registry-1.docker.io" : domain, repository });
  });

  it("reads a tag and a digest together; the registry is asked for the digest", () => {
    const ref = parseImageReference(`127.0.0.1:5000/a:tag@${digest}`);
    expect(ref).toEqual({ domain: "127.0.0.1:5000", host: "127.0.0.1:5000", repository: "a", tag: "tag", digest, reference: digest });
    expect(formatImageReference(ref)).toBe(`127.0.0.1:5000/a:tag@${digest}`);
    expect(parseImageReference(`busybox:latest@${digest}`)).toMatchObject({ repository: "library/busybox", tag: "latest", digest });
  });

  it("accepts long names up to Docker's limits", () => {
    expect(parseImageReference("thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev").repository).toBe(
      "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    );
    expect(parseImageReference(`a:${"t".repeat(128)}`).tag).toHaveLength(128);
    for (const name of ["docker-rules/docker", "docker---rules/docker", "d/docker", "jess/t", "dock__er/docker"]) {
      expect(parseImageReference(name).repository).toBe(name);
    }
  });
});

describe("parseImageReference refuses what Docker refuses", () => {
  it.each([
    ["", "empty"],
    ["docker/Docker", "must be lowercase"],
    ["docker.io/docker/Docker", "must be lowercase"],
    ["Uppercase", "must be lowercase"],
    ["https://github.com/docker/docker", "not a valid"],
    ["-docker", "not a valid repository"],
    ["-docker/docker", "not a valid repository"],
    ["docker-/docker", "not a valid repository"],
    ["-docker.io/docker/docker", "not a valid registry host"],
    ["docker///docker", "not a valid repository"],
    ["docker.io/docker///docker", "not a valid repository"],
    ["____/____", "not a valid repository"],
    ["_docker/_docker", "not a valid repository"],
    ["dock..er/docker", "not a valid registry host"],
    ["dock..er/docker", "not a valid registry host"],
    ["docker/", "not a valid repository"],
    ["[fc00::1]", "not a valid"],
    ["[fc00::1]:5000", "not a valid"],
    ["fc00::1:5000/debian", "not a valid"],
    ["[fe80::1%eth0]:5000/debian", "not a valid"],
    [digest.slice(7), "image id"],
    [`${"a".repeat(256)}/docker`, "longer than 255"],
    ["alpine:-tag", "not a valid tag"],
    [`alpine:${"t".repeat(129)}`, "not a valid tag"],
    ["alpine@sha256:abc", "not a valid digest"],
    [`alpine@md5:${"a".repeat(32)}`, "unsupported digest algorithm"],
    [`alpine@sha256:${"a".repeat(63)}`, "64 lower-case hex"],
    [`alpine@sha256:${"A".repeat(64)}`, "64 lower-case hex"],
  ])("%j (%s)", (text, why) => {
    let error: unknown;
    try {
      parseImageReference(text);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BuildKitNodeError);
    expect((error as BuildKitNodeError).code).toBe("INVALID_ARGUMENT");
    expect((error as Error).message).toContain(`invalid image reference ${JSON.stringify(text)}`);
    expect((error as Error).message).toContain(why);
  });

  it("refuses a value that is not a string (plain JavaScript callers)", () => {
    expect(() => parseImageReference(undefined as unknown as string)).toThrow(/an image reference must be a string, not undefined/);
    expect(() => parseImageReference(null as unknown as string)).toThrow(/not null/);
  });
});

describe("formatImageReference, withDigest, withTag", () => {
  it("writes canonical and familiar names as Docker shows them", () => {
    const cases: [string, string, string][] = [
      ["alpine", "docker.io/library/alpine", "alpine"],
      ["alpine:3", "docker.io/library/alpine:3", "alpine:3"],
      ["library/foo/bar", "docker.io/library/foo/bar", "library/foo/bar"],
      ["fooo/bar", "docker.io/fooo/bar", "fooo/bar"],
      ["index.docker.io/fooo/bar", "docker.io/fooo/bar", "fooo/bar"],
      ["127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase"],
      [`busybox:latest@${digest}`, `docker.io/library/busybox:latest@${digest}`, `busybox:latest@${digest}`],
    ];
    for (const [text, canonical, familiar] of cases) {
      const ref = parseImageReference(text);
      expect(formatImageReference(ref)).toBe(canonical);
      expect(formatImageReference(ref, "familiar")).toBe(familiar);
      // Both forms read back to the same reference.
      expect(parseImageReference(canonical)).toEqual(ref);
      expect(parseImageReference(familiar)).toEqual(ref);
    }
  });

  it("moves a reference to a digest or a tag, validating the result", () => {
    const ref = parseImageReference("127.0.0.1:5000/app:v1");
    expect(withDigest(ref, digest)).toEqual({ domain: "127.0.0.1:5000", host: "127.0.0.1:5000", repository: "app", digest, reference: digest });
    expect(withTag(withDigest(ref, digest), "v2")).toEqual({ domain: "127.0.0.1:5000", host: "127.0.0.1:5000", repository: "app", tag: "v2", reference: "v2" });
    expect(() => withTag(ref, "bad tag")).toThrow(/not a valid tag/);
    expect(() => withDigest(ref, "sha256:nope")).toThrow(/not a valid digest/);
  });
});

describe("registry hosts, as the credential lookups name them", () => {
  it("maps every name of Docker Hub to docker.io and its config key", () => {
    for (const name of ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/", "Registry-1.Docker.IO"]) {
      expect(registryHost(name)).toBe("docker.io");
      expect(credentialKey(name)).toBe("https://index.docker.io/v1/");
    }
  });

  it("keeps other hosts with their port, without scheme or path", () => {
    expect(registryHost("https://ghcr.io/v2/")).toBe("ghcr.io");
    expect(credentialKey("http://127.0.0.1:5001/")).toBe("127.0.0.1:5001");
    expect(credentialKey(parseImageReference("alpine").host)).toBe("https://index.docker.io/v1/");
    expect(credentialKey(parseImageReference("ghcr.io/acme/app").host)).toBe("ghcr.io");
  });

  it("treats loopback registries as plain HTTP, nothing else", () => {
    for (const host of ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"]) expect(isLoopback(host)).toBe(true);
    for (const host of ["ghcr.io", "10.0.0.1:5000", "localhost.example.com", "127.0.0.1.nip.io:5000", "[fc00::1]:5000"]) expect(isLoopback(host)).toBe(false);
  });
});

describe("platforms and index entries", () => {
  it("parses and matches platforms as containerd does (arm64 defaults to v8)", () => {
    expect(parsePlatform("linux/arm64/v8")).toEqual({ os: "linux", architecture: "arm64", variant: "v8" });
    expect(() => parsePlatform("linux")).toThrow(/invalid platform "linux"/);
    expect(() => parsePlatform("linux/arm/v7/x")).toThrow(/invalid platform/);
    expect(platformMatches(parsePlatform("linux/amd64"), { os: "linux", architecture: "amd64" })).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" })).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm/v7"), { os: "linux", architecture: "arm", variant: "v6" })).toBe(false);
    expect(platformMatches(parsePlatform("linux/amd64"), { os: "windows", architecture: "amd64" })).toBe(false);
    expect(platformMatches(parsePlatform("linux/amd64"), undefined)).toBe(false);
  });

  it("knows an attestation manifest by BuildKit's annotations", () => {
    const attestation = {
      mediaType: MediaType.ociManifest,
      digest,
      size: 1,
      platform: { os: "unknown", architecture: "unknown" },
      annotations: { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": digest },
    };
    expect(isAttestation(attestation)).toBe(true);
    expect(isAttestation({ ...attestation, annotations: {} })).toBe(false);
  });
});

describe("parseChallenge", () => {
  it("reads Bearer and Basic challenges, quoted or not", () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/alpine:pull" },
    });
    expect(parseChallenge('Basic realm="buildkit-node"')).toEqual({ scheme: "basic", params: { realm: "buildkit-node" } });
    expect(parseChallenge('Bearer realm=https://x/token, error="insufficient_scope", scope="repository:a:pull repository:b:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://x/token", error: "insufficient_scope", scope: "repository:a:pull repository:b:pull" },
    });
    expect(parseChallenge("")).toBeUndefined();
  });
});
