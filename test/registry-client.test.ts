// The registry client's calls against the set-up script's plain registry
// (127.0.0.1:5000): manifests and blobs both ways, mounts, and how each
// failure reads. Where a failure cannot come from a real registry (a 5xx, a
// 403, corrupted bytes, a registry that stops answering) a front before the
// real registry makes it (test/support/recording-front.ts), and the test says so.
// Loads go to dockerd's Engine API, the one Docker Engine here (no BuildKit
// is involved: the images come from the registry).
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { loadRegistryImage } from "../src/buildkit/registry-load.js";
import { AbortError, BuildKitNodeError } from "../src/errors.js";
import { RegistryError } from "../src/registry/errors.js";
import { MediaType } from "../src/registry/manifest.js";
import { RegistryClient } from "../src/registry/registry-client.js";
import { type RecordingFront, startRecordingFront } from "./support/recording-front.js";
import { PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const BUSYBOX = `${PLAIN_REGISTRY}/busybox:latest`;

const fronts: RecordingFront[] = [];
afterEach(async () => {
  await Promise.all(fronts.splice(0).map((front) => front.close()));
});

async function front(): Promise<RecordingFront> {
  const started = await startRecordingFront(PLAIN_REGISTRY);
  fronts.push(started);
  return started;
}

function blob(size: number): { bytes: Buffer; descriptor: { mediaType: string; digest: string; size: number } } {
  const bytes = randomBytes(size);
  return { bytes, descriptor: { mediaType: "application/octet-stream", digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}`, size } };
}

async function* pieces(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

async function failure(promise: Promise<unknown>): Promise<RegistryError> {
  const error = await promise.then(
    () => new Error("it succeeded"),
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(RegistryError);
  return error as RegistryError;
}

describe("manifests", () => {
  const registry = new RegistryClient({ auth: {} });

  it("gets a manifest with its exact bytes and digest, by tag and by digest", async () => {
    const byTag = await registry.getManifest(BUSYBOX);
    expect(byTag.kind).toBe("image");
    expect(byTag.descriptor.digest).toBe(`sha256:${createHash("sha256").update(byTag.bytes).digest("hex")}`);
    expect(byTag.descriptor.size).toBe(byTag.bytes.byteLength);
    const byDigest = await registry.getManifest(`${PLAIN_REGISTRY}/busybox@${byTag.descriptor.digest}`);
    expect(Buffer.from(byDigest.bytes).equals(Buffer.from(byTag.bytes))).toBe(true);
    expect(await registry.headManifest(BUSYBOX)).toEqual(byTag.descriptor);
  });

  it("puts an index (OCI and Docker) under a tag and reads it back as written", async () => {
    const image = await registry.getManifest(BUSYBOX);
    const repository = `${PLAIN_REGISTRY}/${uniqueRepository("manifests")}`;
    await registry.copyImage(BUSYBOX, `${repository}@${image.descriptor.digest}`);
    for (const mediaType of [MediaType.ociIndex, MediaType.dockerManifestList]) {
      const bytes = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType, manifests: [{ ...image.descriptor, platform: { os: "linux", architecture: "amd64" } }] }),
      );
      const put = await registry.putManifest(`${repository}:index`, { mediaType, bytes });
      const back = await registry.getManifest(`${repository}:index`);
      expect(back.kind).toBe("index");
      expect(back.descriptor).toEqual(put);
      expect(back.descriptor.mediaType).toBe(mediaType);
    }
  });

  it("headManifest answers undefined for a missing tag; getManifest rejects NOT_FOUND", async () => {
    const missing = `${PLAIN_REGISTRY}/${uniqueRepository("missing")}:nope`;
    expect(await registry.headManifest(missing)).toBeUndefined();
    const error = await failure(registry.getManifest(missing));
    expect(error.code).toBe("NOT_FOUND");
    expect(error.status).toBe(404);
    expect(error.registryCode).toMatch(/NAME_UNKNOWN|MANIFEST_UNKNOWN/);
    expect(error.message).toContain(missing.split(":nope")[0]);
  });

  it("refuses a manifest whose bytes do not match the digest asked for (a front corrupts it: a fake)", async () => {
    const image = await registry.getManifest(BUSYBOX);
    const corrupting = await front();
    corrupting.fault = ({ method, path }) =>
      method === "GET" && path.includes("/manifests/")
        ? { status: 200, body: `${Buffer.from(image.bytes).toString()} `, headers: { "Content-Type": image.descriptor.mediaType } }
        : undefined;
    const error = await failure(registry.getManifest(`${corrupting.host}/busybox@${image.descriptor.digest}`));
    expect(error.code).toBe("INTERNAL");
    expect(error.message).toContain("whose digest is");
  });
});

describe("blobs", () => {
  const registry = new RegistryClient({ auth: {} });

  it("pushes a blob in one streamed PUT, then finds it there and streams it back", async () => {
    const repository = `${PLAIN_REGISTRY}/${uniqueRepository("blobs")}`;
    const { bytes, descriptor } = blob(3 * 1024 * 1024 + 17);
    const progress: number[] = [];
    const pushed = await registry.pushBlob(repository, descriptor, () => pieces(bytes, 64 * 1024), { onProgress: (n) => progress.push(n) });
    expect(pushed.how).toBe("uploaded");
    expect(progress.at(-1)).toBe(descriptor.size);
    expect(await registry.headBlob(repository, descriptor.digest)).toMatchObject({ digest: descriptor.digest, size: descriptor.size });
    expect((await registry.pushBlob(repository, descriptor, bytes)).how).toBe("existed");
    expect((await readAll(await registry.getBlob(repository, descriptor))).equals(bytes)).toBe(true);
  });

  it("pushes a blob in PATCHes of chunkSize with their ranges, then one closing PUT", async () => {
    const counting = await front();
    const repository = `${counting.host}/${uniqueRepository("chunked")}`;
    const { bytes, descriptor } = blob(250_000);
    const pushed = await registry.pushBlob(repository, descriptor, () => pieces(bytes, 7_000), { chunkSize: 100_000 });
    expect(pushed.how).toBe("uploaded");
    expect(counting.blobTraffic()).toEqual(["HEAD blob", "POST upload", "PATCH upload", "PATCH upload", "PATCH upload", "PUT upload"]);
    expect((await readAll(await registry.getBlob(repository, descriptor))).equals(bytes)).toBe(true);
  });

  it("refuses a blob longer than its descriptor in a chunked upload, leaving nothing behind", async () => {
    const repository = `${PLAIN_REGISTRY}/${uniqueRepository("too-long")}`;
    const { bytes, descriptor } = blob(1000);
    const error = await registry.pushBlob(repository, { ...descriptor, size: 900 }, bytes, { chunkSize: 500 }).catch((err: unknown) => err);
    expect((error as Error).message).toContain("longer than its descriptor");
    expect(await registry.headBlob(repository, descriptor.digest)).toBeUndefined();
  });

  it("refuses a descriptor without a digest or a size before any request", async () => {
    for (const descriptor of [{ mediaType: "x", digest: "nope", size: 1 }, { mediaType: "x", digest: blob(1).descriptor.digest, size: -1 }]) {
      const error = await registry.pushBlob(`${PLAIN_REGISTRY}/x`, descriptor, Buffer.from("x")).catch((err: unknown) => err);
      expect((error as { code?: string }).code).toBe("INVALID_ARGUMENT");
    }
  });

  it("mounts a blob from another repository, and answers false when the source lacks it", async () => {
    const source = `${PLAIN_REGISTRY}/${uniqueRepository("mount-source")}`;
    const target = `${PLAIN_REGISTRY}/${uniqueRepository("mount-target")}`;
    const { bytes, descriptor } = blob(10_000);
    await registry.pushBlob(source, descriptor, bytes);
    expect(await registry.mountBlob(target, descriptor.digest, source)).toBe(true);
    expect(await registry.headBlob(target, descriptor.digest)).toBeDefined();
    const other = blob(10);
    expect(await registry.mountBlob(`${PLAIN_REGISTRY}/${uniqueRepository("mount-nothing")}`, other.descriptor.digest, source)).toBe(false);
  });

  it("fails a blob stream whose bytes do not match its digest (a front corrupts it: a fake)", async () => {
    const repository = uniqueRepository("corrupt");
    const { bytes, descriptor } = blob(5000);
    await registry.pushBlob(`${PLAIN_REGISTRY}/${repository}`, descriptor, bytes);
    const corrupting = await front();
    corrupting.fault = ({ method, path }) => (method === "GET" && path.endsWith(descriptor.digest) ? { status: 200, body: "x".repeat(5000) } : undefined);
    const stream = await registry.getBlob(`${corrupting.host}/${repository}`, descriptor);
    const error = await readAll(stream).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).code).toBe("INTERNAL");
    expect((error as Error).message).toContain("do not match the digest");
  });

  it("many concurrent pushes of one blob into one repository all succeed", async () => {
    const repository = `${PLAIN_REGISTRY}/${uniqueRepository("concurrent")}`;
    const { bytes, descriptor } = blob(2 * 1024 * 1024);
    const results = await Promise.all(Array.from({ length: 8 }, () => registry.pushBlob(repository, descriptor, () => pieces(bytes, 32 * 1024))));
    expect(results.every((r) => r.how === "uploaded" || r.how === "existed")).toBe(true);
    expect(await registry.headBlob(repository, descriptor.digest)).toMatchObject({ size: descriptor.size });
  });
});

describe("retries of refused pushes (a front answers 5xx or DIGEST_INVALID: a fake)", () => {
  it("pushes again after a 5xx or a digest mismatch, a bounded number of times", async () => {
    const flaky = await front();
    let refusals = 2;
    flaky.fault = ({ method, path }) => {
      if (method !== "PUT" || !path.includes("/blobs/uploads/") || refusals === 0) return undefined;
      refusals--;
      return refusals === 1
        ? { status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}' }
        : { status: 400, body: '{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}' };
    };
    const registry = new RegistryClient({ auth: {}, pushRetries: 2 });
    const repository = `${flaky.host}/${uniqueRepository("retry")}`;
    const { bytes, descriptor } = blob(40_000);
    let opened = 0;
    const pushed = await registry.pushBlob(repository, descriptor, () => (opened++, pieces(bytes, 4096)));
    expect(pushed.how).toBe("uploaded");
    expect(opened).toBe(3);
    // Each refused upload session was given back to the registry.
    expect(flaky.seen.filter((r) => r.method === "DELETE").length).toBe(2);
  });

  it("gives up after pushRetries with the registry's refusal, typed", async () => {
    const failing = await front();
    failing.fault = ({ method, path }) => (method === "PUT" && path.includes("/manifests/") ? { status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}' } : undefined);
    const registry = new RegistryClient({ auth: {}, pushRetries: 1 });
    const error = await failure(registry.putManifest(`${failing.host}/${uniqueRepository("give-up")}:v1`, { mediaType: MediaType.ociIndex, bytes: Buffer.from('{"schemaVersion":2,"manifests":[]}') }));
    expect(error.code).toBe("INTERNAL");
    expect(error.status).toBe(500);
    expect(error.message).toContain("disk on fire");
    expect(failing.seen.filter((r) => r.method === "PUT")).toHaveLength(2);
  });

  it("does not push again after a refusal that would repeat (a manifest whose blobs are missing)", async () => {
    const registry = new RegistryClient({ auth: {}, pushRetries: 3 });
    const counting = await front();
    const missing = blob(10).descriptor;
    const manifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: { ...missing, mediaType: MediaType.ociConfig }, layers: [] };
    const error = await failure(
      registry.putManifest(`${counting.host}/${uniqueRepository("no-retry")}:v1`, { mediaType: MediaType.ociManifest, bytes: Buffer.from(JSON.stringify(manifest)) }),
    );
    expect(error.code).toBe("FAILED_PRECONDITION");
    expect(error.registryCode).toBe("MANIFEST_BLOB_UNKNOWN");
    expect(counting.seen.filter((r) => r.method === "PUT")).toHaveLength(1);
  });
});

describe("archives and loads: failures end every stream", () => {
  const registry = new RegistryClient({ auth: {} });

  it("a missing image is NOT_FOUND for a load, and the Engine is not left waiting", async () => {
    const error = await failure(loadRegistryImage(registry, `${PLAIN_REGISTRY}/${uniqueRepository("absent")}:v1`));
    expect(error.code).toBe("NOT_FOUND");
  });

  it("a name Docker would refuse is INVALID_ARGUMENT before anything moves", async () => {
    const error = await loadRegistryImage(registry, BUSYBOX, { names: ["Not/Valid:x"] }).catch((err: unknown) => err);
    expect((error as { code?: string }).code).toBe("INVALID_ARGUMENT");
    expect((error as Error).message).toContain('invalid image reference "Not/Valid:x"');
  });

  it("dockerd's refusal of the archive is the error a load reports", async () => {
    // A real image whose layer is not a tar: the registry takes it, dockerd's load does not.
    const repository = `${PLAIN_REGISTRY}/${uniqueRepository("not-a-tar")}`;
    const layer = blob(4096);
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [layer.descriptor.digest] } }));
    const configDescriptor = { mediaType: MediaType.ociConfig, digest: `sha256:${createHash("sha256").update(config).digest("hex")}`, size: config.length };
    await registry.pushBlob(repository, layer.descriptor, layer.bytes);
    await registry.pushBlob(repository, configDescriptor, config);
    const manifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDescriptor, layers: [{ ...layer.descriptor, mediaType: MediaType.ociLayer }] };
    await registry.putManifest(`${repository}:v1`, { mediaType: MediaType.ociManifest, bytes: Buffer.from(JSON.stringify(manifest)) });
    const error = await loadRegistryImage(registry, `${repository}:v1`, { names: [`bkn-not-a-tar-${Date.now().toString(36)}:v1`] }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BuildKitNodeError);
    expect((error as Error).message).toContain("loading the image into Docker");
  });

  it("a destination that fails stops the archive, and the registry reads with it", async () => {
    const dest = new Writable({
      write(_chunk, _encoding, callback) {
        callback(new Error("disk full"));
      },
    });
    const error = await registry.writeImageArchive(BUSYBOX, { format: "oci", dest }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(BuildKitNodeError);
    expect((error as Error).message).toContain("disk full");
  });

  it("a file that cannot be written is one of the library's errors, with its errno's code", async () => {
    const out = mkdtempSync(join(tmpdir(), "bkn-archive-unwritable-"));
    try {
      writeFileSync(join(out, "file"), "");
      // Its directory would be a regular file.
      const error = await registry.writeImageArchive(BUSYBOX, { format: "oci", dest: join(out, "file", "image.tar") }).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(BuildKitNodeError);
      expect((error as Error).message).toMatch(/ENOTDIR|EEXIST/);
      expect(readdirSync(out)).toEqual(["file"]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("an aborted archive to a file rejects with AbortError and leaves no file", async () => {
    const out = mkdtempSync(join(tmpdir(), "bkn-archive-abort-"));
    try {
      const controller = new AbortController();
      const writing = registry.writeImageArchive(BUSYBOX, {
        format: "docker",
        dest: join(out, "image.tar"),
        signal: controller.signal,
        onProgress: (event) => {
          if (event.current > 0) controller.abort(new Error("stop"));
        },
      });
      await expect(writing).rejects.toBeInstanceOf(AbortError);
      expect(readdirSync(out)).toEqual([]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

describe("failures, typed", () => {
  it("UNAVAILABLE when nothing listens at the registry's address", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await failure(new RegistryClient({ auth: {} }).getManifest(`127.0.0.1:${port}/app:v1`));
    expect(error.code).toBe("UNAVAILABLE");
    expect(error.message).toContain(`cannot reach 127.0.0.1:${port}`);
  });

  it("TIMEOUT when the registry accepts the connection and never answers (a silent server: a fake)", async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const error = await failure(new RegistryClient({ auth: {}, timeoutMs: 300 }).getManifest(`127.0.0.1:${port}/app:v1`));
      expect(error.code).toBe("TIMEOUT");
      expect(error.message).toContain("did not answer within 300 ms");
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it("TIMEOUT when a blob stops moving mid-stream (a front stalls it: a fake)", async () => {
    const sockets: net.Socket[] = [];
    const stalling = net.createServer((socket) => {
      sockets.push(socket);
      socket.once("data", () => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n" + "x".repeat(1000)));
    });
    await new Promise<void>((resolve) => stalling.listen(0, "127.0.0.1", resolve));
    try {
      const port = (stalling.address() as net.AddressInfo).port;
      const stream = await new RegistryClient({ auth: {}, timeoutMs: 300 }).getBlob(`127.0.0.1:${port}/app`, `sha256:${"0".repeat(64)}`);
      const error = await readAll(stream).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).code).toBe("TIMEOUT");
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => stalling.close(() => resolve()));
    }
  });

  it("PERMISSION_DENIED for a 403 (a front answers it, as GHCR does to a token without access: a fake)", async () => {
    const denying = await front();
    denying.fault = () => ({ status: 403, body: '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}' });
    const error = await failure(new RegistryClient({ auth: { [denying.host]: { username: "u", password: "p" } } }).getManifest(`${denying.host}/busybox:latest`));
    expect(error.code).toBe("PERMISSION_DENIED");
    expect(error.registryCode).toBe("DENIED");
  });

  it("AbortError when the signal aborts, mid-call or before", async () => {
    const registry = new RegistryClient({ auth: {} });
    const aborted = AbortSignal.abort(new Error("stop"));
    await expect(registry.getManifest(BUSYBOX, { signal: aborted })).rejects.toBeInstanceOf(AbortError);
    const controller = new AbortController();
    const { descriptor } = await registry.getManifest(BUSYBOX).then((m) => ({ descriptor: m.kind === "image" ? m.manifest.layers[0]! : m.descriptor }));
    const stream = await registry.getBlob(BUSYBOX, descriptor, { signal: controller.signal });
    controller.abort(new Error("stop"));
    const error = await readAll(stream).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(AbortError);
  });

  it("validates its options and the images it is given", async () => {
    expect(() => new RegistryClient({ timeoutMs: 0 })).toThrow(/timeoutMs/);
    expect(() => new RegistryClient({ timeoutMs: Number.NaN })).toThrow(/timeoutMs/);
    const registry = new RegistryClient({ auth: {} });
    for (const image of [undefined, {}, { domain: "x", repository: "Bad" }, "upper/Case"]) {
      const error = await registry.getManifest(image as never).catch((err: unknown) => err);
      expect((error as { code?: string }).code).toBe("INVALID_ARGUMENT");
    }
  });
});

describe("insecure registries", () => {
  it("speaks plain HTTP to a non-loopback host only when asked", () => {
    expect(new RegistryClient().http.scheme("registry.internal:5000")).toBe("https");
    expect(new RegistryClient({ insecure: ["registry.internal:5000"] }).http.scheme("registry.internal:5000")).toBe("http");
    expect(new RegistryClient({ insecure: ["registry.internal:5000"] }).http.scheme("ghcr.io")).toBe("https");
    expect(new RegistryClient({ insecure: true }).http.scheme("ghcr.io")).toBe("http");
    expect(new RegistryClient({ insecure: ["Registry.Internal"] }).http.scheme("registry.internal:5000")).toBe("http");
    expect(new RegistryClient().http.scheme("127.0.0.1:5000")).toBe("http");
  });

  it("reaches a plain-HTTP registry by a non-loopback name only when it is listed as insecure", async () => {
    // 2130706433 is 127.0.0.1 written as one number: a name the loopback rule does not know,
    // that still reaches the set-up script's plain registry.
    const name = `2130706433:${PLAIN_REGISTRY.split(":")[1]}`;
    const secure = await failure(new RegistryClient({ auth: {} }).getManifest(`${name}/busybox:latest`));
    expect(secure.code).toBe("TLS");
    expect(secure.message).toContain(`if ${name} speaks plain HTTP, pass it in the client's insecure option`);
    const insecure = new RegistryClient({ auth: {}, insecure: [name] });
    expect((await insecure.getManifest(`${name}/busybox:latest`)).kind).toBe("image");
  });
});
