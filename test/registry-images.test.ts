// The registry operations on images built for real on each daemon and pushed
// to the set-up script's registries: copies (mounted on one registry, streamed
// across two), image indexes assembled from per-platform images, and images
// streamed out as OCI layouts and as archives dockerd loads and runs.
// dockerd's BuildKit v0.8 pushes Docker schema 2 manifests through the Engine;
// buildkitd v0.24 pushes OCI ones, and with provenance (built by buildctl, the
// reference client, since the library has no attestation option) an index
// with an attestation manifest per platform.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadRegistryImage } from "../src/buildkit/registry-load.js";
import { type BuildKitClient, connect } from "../src/index.js";
import type { CopyProgress } from "../src/registry/copy-image.js";
import { type ImageIndex, type ImageManifest, MediaType } from "../src/registry/manifest.js";
import { RegistryClient } from "../src/registry/registry-client.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS, type BuildDaemon, DOCKER_BUILDKIT, STANDALONE_TLS } from "./support/daemons.js";
import { startRecordingFront } from "./support/recording-front.js";
import { AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, BASE_IMAGE, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const DOCKER = "/usr/bin/docker";
const DOCKER_SOCKET = DOCKER_BUILDKIT === "docker://" ? "/var/run/docker.sock" : DOCKER_BUILDKIT.slice("docker://".length);
const BUILDCTL = "../shared/buildkit/bin/buildctl";

const registry = new RegistryClient({ auth: { [AUTH_REGISTRY]: { username: AUTH_USER, password: AUTH_PASSWORD } } });

function docker(...args: string[]): string {
  return execFileSync(DOCKER, ["--host", `unix://${DOCKER_SOCKET}`, ...args], { encoding: "utf8" });
}

/** Every entry of a (small) tar by name. */
async function readTar(path: string): Promise<Map<string, Buffer>> {
  const entries = new Map<string, Buffer>();
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      entries.set(entry.header.name, Buffer.concat(chunks));
    }
  })();
  createReadStream(path).pipe(extract as unknown as NodeJS.WritableStream);
  await done;
  return entries;
}

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Builds a small image on the daemon and pushes it (the Engine pushes for dockerd). */
async function buildImage(bk: BuildKitClient, name: string, dockerfile: string, platform?: string): Promise<string> {
  const { result } = await runCollecting(
    bk.build({
      context: { files: { Dockerfile: dockerfile, "marker.txt": name } },
      ...(platform ? { platforms: [platform] } : {}),
      outputs: [{ type: "image", name, push: true }],
    }),
  );
  const digest = result.pushed[0]?.digest;
  if (!digest) throw new Error(`the build of ${name} reported no digest`);
  return digest;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon: BuildDaemon) => {
  let bk: BuildKitClient;
  /** An image built on this daemon: busybox plus a marker file and a label. */
  let source: string;
  let marker: string;

  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
    const repository = uniqueRepository(`registry-images-${daemon.name}`);
    source = `${PLAIN_REGISTRY}/${repository}:v1`;
    marker = `built on ${daemon.name} as ${repository}`;
    await buildImage(bk, source, `FROM ${BASE_IMAGE}\nLABEL org.example.marker="${marker}"\nRUN echo "${marker}" > /marker\n`);
  }, 180_000);

  afterAll(async () => {
    await bk?.close();
  });

  it("copies to another repository of the same registry by mounting every blob (no blob bytes sent)", async () => {
    const front = await startRecordingFront(PLAIN_REGISTRY);
    try {
      const from = `${front.host}/${source.slice(PLAIN_REGISTRY.length + 1)}`;
      const to = `${front.host}/${uniqueRepository("copy-mounted")}:copied`;
      const progress: CopyProgress[] = [];
      const result = await registry.copyImage(from, to, { onProgress: (event) => progress.push(event) });
      const original = await registry.getManifest(source);
      expect(result.descriptor.digest).toBe(original.descriptor.digest);
      expect(result.blobs.copied).toBe(0);
      expect(result.blobs.mounted).toBeGreaterThanOrEqual(2);
      expect(result.bytesCopied).toBe(0);
      expect(front.blobTraffic().filter((t) => t !== "HEAD blob" && t !== "GET blob")).toEqual(Array(result.blobs.mounted).fill("POST mount"));
      expect(progress.filter((p) => p.kind === "blob" && p.status === "mounted")).toHaveLength(result.blobs.mounted);
      // The copy is whole: its manifest and every blob read back, digests checked on the way.
      const copied = await registry.getManifest(to);
      expect(Buffer.from(copied.bytes).equals(Buffer.from(original.bytes))).toBe(true);
    } finally {
      await front.close();
    }
  });

  it("streams the blobs when the registry will not mount (the front drops mount=, as registries that do not mount do)", async () => {
    const front = await startRecordingFront(PLAIN_REGISTRY);
    front.rewrite = ({ method, path, query }) => (method === "POST" && query.has("mount") ? path : undefined);
    try {
      const from = `${front.host}/${source.slice(PLAIN_REGISTRY.length + 1)}`;
      const to = `${front.host}/${uniqueRepository("copy-unmounted")}:copied`;
      const result = await registry.copyImage(from, to);
      expect(result.blobs.mounted).toBe(0);
      expect(result.blobs.copied).toBeGreaterThanOrEqual(2);
      expect(result.bytesCopied).toBeGreaterThan(0);
      // The upload the registry opened for the refused mount carried the bytes: no second session.
      const traffic = front.blobTraffic();
      expect(traffic.filter((t) => t === "POST mount")).toHaveLength(result.blobs.copied);
      expect(traffic.filter((t) => t === "PUT upload")).toHaveLength(result.blobs.copied);
      expect(traffic.filter((t) => t === "POST upload" || t === "PATCH upload")).toEqual([]);
      expect((await registry.getManifest(to)).descriptor.digest).toBe((await registry.getManifest(source)).descriptor.digest);
    } finally {
      await front.close();
    }
  });

  it("copies across registries (plain → htpasswd), streaming every blob, digests kept", async () => {
    const to = `${AUTH_REGISTRY}/${uniqueRepository("copy-across")}:v1`;
    const result = await registry.copyImage(source, to);
    expect(result.blobs.mounted).toBe(0);
    expect(result.blobs.copied).toBeGreaterThanOrEqual(2);
    const copied = await registry.getManifest(to);
    expect(copied.descriptor.digest).toBe((await registry.getManifest(source)).descriptor.digest);
    if (copied.kind !== "image") throw new Error("expected an image manifest");
    for (const layer of copied.manifest.layers) {
      let size = 0;
      for await (const chunk of await registry.getBlob(to, layer)) size += (chunk as Buffer).length;
      expect(size).toBe(layer.size);
    }
    // Copying again moves nothing.
    const again = await registry.copyImage(source, to);
    expect(again.blobs).toEqual({ copied: 0, mounted: 0, existed: 0 });
  });

  it("writes an OCI layout whose index.json and blobs check out by digest", async () => {
    const out = tempDir("oci-archive");
    try {
      const dest = join(out.path, "image.oci.tar");
      const written = await registry.writeImageArchive(source, { format: "oci", dest });
      const entries = await readTar(dest);
      expect(JSON.parse(entries.get("oci-layout")!.toString())).toEqual({ imageLayoutVersion: "1.0.0" });
      for (const [name, bytes] of entries) {
        if (name.startsWith("blobs/sha256/")) expect(sha256(bytes)).toBe(`sha256:${name.slice("blobs/sha256/".length)}`);
      }
      const index = JSON.parse(entries.get("index.json")!.toString()) as ImageIndex;
      expect(index.manifests).toHaveLength(1);
      expect(index.manifests[0]).toMatchObject({
        digest: written.descriptor.digest,
        annotations: { "io.containerd.image.name": source, "org.opencontainers.image.ref.name": "v1" },
      });
      const blob = (digest: string) => entries.get(`blobs/${digest.replace(":", "/")}`);
      const top = JSON.parse(blob(index.manifests[0]!.digest)!.toString()) as ImageManifest | ImageIndex;
      const manifests = "manifests" in top ? top.manifests.map((m) => JSON.parse(blob(m.digest)!.toString()) as ImageManifest) : [top];
      for (const manifest of manifests) {
        for (const descriptor of [manifest.config, ...manifest.layers]) {
          expect(blob(descriptor.digest)?.length).toBe(descriptor.size);
        }
      }
      expect(written.platforms).toContainEqual({ os: "linux", architecture: "amd64" });
    } finally {
      out.remove();
    }
  });

  it("loads into dockerd straight from the registry; the image runs and keeps its config", async () => {
    const tag = `bkn-registry-load-${daemon.name}-${Date.now().toString(36)}:v1`;
    try {
      const loaded = await loadRegistryImage(registry, source, { names: [tag], dockerSocket: DOCKER_SOCKET });
      expect(loaded.loaded).toEqual([tag]);
      expect(docker("run", "--rm", "--network", "none", tag, "cat", "/marker").trim()).toBe(marker);
      const inspected = JSON.parse(docker("image", "inspect", tag)) as { Config: { Labels: Record<string, string> } }[];
      expect(inspected[0]!.Config.Labels["org.example.marker"]).toBe(marker);
    } finally {
      execFileSync(DOCKER, ["--host", `unix://${DOCKER_SOCKET}`, "rmi", "--force", tag], { stdio: "ignore" });
    }
  });

  it("writes a docker archive file that docker load takes as it is", async () => {
    const out = tempDir("docker-archive");
    const tag = `bkn-registry-archive-${daemon.name}-${Date.now().toString(36)}:v1`;
    try {
      const dest = join(out.path, "image.tar");
      await registry.writeImageArchive(source, { format: "docker", dest, names: [tag] });
      const entries = await readTar(dest);
      const manifest = JSON.parse(entries.get("manifest.json")!.toString()) as { Config: string; RepoTags: string[]; Layers: string[] }[];
      expect(manifest).toHaveLength(1);
      expect(manifest[0]!.RepoTags).toEqual([tag]);
      for (const path of [manifest[0]!.Config, ...manifest[0]!.Layers]) expect(entries.has(path)).toBe(true);
      expect(docker("load", "--input", dest)).toContain(`Loaded image: ${tag}`);
      expect(docker("run", "--rm", "--network", "none", tag, "cat", "/marker").trim()).toBe(marker);
    } finally {
      execFileSync(DOCKER, ["--host", `unix://${DOCKER_SOCKET}`, "rmi", "--force", tag], { stdio: "ignore" });
      out.remove();
    }
  });

  it("refuses an archive of a platform the image does not have, and writes no file", async () => {
    const out = tempDir("wrong-platform");
    try {
      const dest = join(out.path, "image.tar");
      const error = await registry.writeImageArchive(source, { format: "docker", dest, platform: "linux/s390x" }).catch((err: unknown) => err);
      expect((error as { code?: string }).code).toBe("NOT_FOUND");
      expect((error as Error).message).toContain("not linux/s390x");
      expect(() => readFileSync(dest)).toThrow();
    } finally {
      out.remove();
    }
  });

  describe("pushIndex", () => {
    it(
      daemon.embeddedInDocker
        ? "assembles a Docker manifest list from images pushed per platform (platforms read from their configs)"
        : "assembles one OCI index from per-platform results pushed by digest, keeping their provenance attestations",
      async () => {
        const repository = `${PLAIN_REGISTRY}/${uniqueRepository(`index-${daemon.name}`)}`;
        const platforms = ["linux/amd64", "linux/arm64"];
        const digests = daemon.embeddedInDocker
          ? await Promise.all(platforms.map((p) => buildImage(bk, `${repository}:build-${p.replace("/", "-")}`, "FROM scratch\nCOPY marker.txt /marker\n", p)))
          : platforms.map((p) => buildctlPushByDigest(repository, p));
        const sources = digests.map((digest) => ({ image: `${repository}@${digest}` }));
        const result = await registry.pushIndex(`${repository}:multi`, sources);
        const index = await registry.getManifest(`${repository}:multi`);
        if (index.kind !== "index") throw new Error("expected an index");
        expect(index.descriptor.digest).toBe(result.descriptor.digest);
        const images = index.index.manifests.filter((m) => m.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest");
        expect(images.map((m) => `${m.platform?.os}/${m.platform?.architecture}`).sort()).toEqual(platforms);
        if (daemon.embeddedInDocker) {
          expect(index.descriptor.mediaType).toBe(MediaType.dockerManifestList);
          expect(index.index.manifests.map((m) => m.digest).sort()).toEqual([...digests].sort());
          return;
        }
        expect(index.descriptor.mediaType).toBe(MediaType.ociIndex);
        // buildx's way: each platform's attestation manifest kept, pointing at its image.
        const attestations = index.index.manifests.filter((m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest");
        expect(attestations).toHaveLength(2);
        expect(attestations.map((a) => a.annotations?.["vnd.docker.reference.digest"]).sort()).toEqual(images.map((m) => m.digest).sort());
        // No per-platform tags: the index is the only tag of the repository.
        expect(await registry.listTags(repository)).toEqual(["multi"]);

        // The same index under a name in another repository: its children are mounted there first.
        const elsewhere = `${PLAIN_REGISTRY}/${uniqueRepository(`index-elsewhere-${daemon.name}`)}:multi`;
        const progress: CopyProgress[] = [];
        const again = await registry.pushIndex([elsewhere], sources, { onProgress: (event) => progress.push(event) });
        expect(again.descriptor.digest).toBe(result.descriptor.digest);
        expect(progress.some((p) => p.kind === "blob" && p.status === "mounted")).toBe(true);
        const out = tempDir("multi-archive");
        try {
          const archive = await registry.writeImageArchive(elsewhere, { format: "oci", dest: join(out.path, "multi.tar") });
          expect(archive.platforms.map((p) => `${p.os}/${p.architecture}`).sort()).toEqual(platforms);
          const entries = await readTar(join(out.path, "multi.tar"));
          // Every manifest of the index, attestations included, with their blobs.
          for (const m of index.index.manifests) expect(entries.has(`blobs/${m.digest.replace(":", "/")}`)).toBe(true);
        } finally {
          out.remove();
        }
      },
      180_000,
    );
  });
});

/** A v0.24 per-platform build as buildx makes it: pushed by digest, with a provenance attestation. */
function buildctlPushByDigest(repository: string, platform: string): string {
  const context = mkdtempSync(join(tmpdir(), "bkn-buildctl-"));
  try {
    writeFileSync(join(context, "Dockerfile"), "FROM scratch\nCOPY marker.txt /marker\n");
    writeFileSync(join(context, "marker.txt"), `${repository} ${platform}`);
    const tls = STANDALONE_TLS
      ? [
          "--tlsservername",
          process.env.BUILDKIT_TLS_SERVER_NAME ?? "",
          "--tlscacert",
          process.env.BUILDKIT_TLS_CA ?? "",
          "--tlscert",
          process.env.BUILDKIT_TLS_CERT ?? "",
          "--tlskey",
          process.env.BUILDKIT_TLS_KEY ?? "",
        ]
      : [];
    const metadata = join(context, "metadata.json");
    execFileSync(
      BUILDCTL,
      [
        "--addr",
        process.env.BUILDKIT_HOST ?? "",
        ...tls,
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        `context=${context}`,
        "--local",
        `dockerfile=${context}`,
        "--opt",
        `platform=${platform}`,
        "--opt",
        "attest:provenance=mode=min",
        "--output",
        `type=image,name=${repository},push-by-digest=true,name-canonical=true,push=true`,
        "--metadata-file",
        metadata,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    return (JSON.parse(readFileSync(metadata, "utf8")) as { "containerimage.digest": string })["containerimage.digest"];
  } finally {
    rmSync(context, { recursive: true, force: true });
  }
}
