// Contexts in and archives out, and registries with and without auth, on
// each test daemon.
import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { createGzip } from "node:zlib";
import * as tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildError, type BuildKitClient, connect } from "../src/index.js";
import { failureOf, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDockerd, BUILD_DAEMONS } from "./support/daemons.js";
import {
  AUTH_PASSWORD,
  AUTH_REGISTRY,
  AUTH_USER,
  BASE_IMAGE,
  getImageConfig,
  getManifest,
  PLAIN_REGISTRY,
  uniqueRepository,
} from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    if (daemon.embeddedInDocker) assertDockerd();
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  type TarEntry = { name: string; content?: string; type?: "file" | "directory" | "symlink" | "link"; linkname?: string; mode?: number };

  /** A tarball as a user would upload it: a stream, optionally gzipped. */
  function tarball(entries: TarEntry[], gzip = false): Readable {
    const pack = tarStream.pack();
    for (const entry of entries) {
      const { content, ...header } = entry;
      pack.entry({ type: "file", mode: 0o644, ...header }, content ?? "");
    }
    pack.finalize();
    const stream = Readable.from(pack as AsyncIterable<Buffer>, { objectMode: false });
    return gzip ? stream.pipe(createGzip()) : stream;
  }

  /** Reads a tar stream into a map of entry name → content. */
  async function readTar(input: Readable): Promise<Map<string, Buffer>> {
    const files = new Map<string, Buffer>();
    const extract = tarStream.extract();
    const done = new Promise<void>((resolve, reject) => {
      extract.on("entry", (header, stream, next) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: unknown) => chunks.push(c as Buffer));
        stream.on("end", () => {
          files.set(header.name.replace(/^\.\//, ""), Buffer.concat(chunks));
          next();
        });
      });
      extract.on("finish", resolve);
      extract.on("error", reject);
    });
    input.pipe(extract);
    await done;
    return files;
  }

  describe("tarball contexts", () => {
    it("builds from an uploaded tar stream (gzipped), Dockerfile inside it", async () => {
      const out = tempDir("tarctx");
      try {
        const context = tarball(
          [
            { name: "Dockerfile", content: "FROM scratch\nCOPY . /in/\n" },
            { name: "app/", type: "directory", mode: 0o755 },
            { name: "app/run.sh", content: "#!/bin/sh\n", mode: 0o755 },
            { name: "app/link", type: "symlink", linkname: "run.sh" },
            { name: "./notes.txt", content: "uploaded" },
          ],
          true,
        );
        await runCollecting(bk.build({ context: { tar: context }, outputs: [{ type: "local", dest: out.path }] }));
        expect(readFileSync(join(out.path, "in/notes.txt"), "utf8")).toBe("uploaded");
        expect(readFileSync(join(out.path, "in/app/run.sh"), "utf8")).toBe("#!/bin/sh\n");
        expect(existsSync(join(out.path, "in/Dockerfile"))).toBe(true);
      } finally {
        out.remove();
      }
    });

    it.each([
      ["a ../ path", [{ name: "../escape.txt", content: "x" }]],
      ["an absolute path", [{ name: "/etc/evil", content: "x" }]],
      ["a symlink pointing out", [{ name: "out", type: "symlink" as const, linkname: "../../etc" }]],
    ])("refuses a tarball with %s before building", async (_what, entries) => {
      const { error } = await failureOf(
        bk.build({ context: { tar: tarball([{ name: "Dockerfile", content: "FROM scratch\n" }, ...entries]) } }),
      );
      expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
      expect((error as Error).message).toMatch(/escape|outside|absolute|\.\./i);
    });
  });

  describe("archive outputs", () => {
    it("streams a tar of the result's files to a Writable", async () => {
      const sink = new PassThrough();
      const read = readTar(sink);
      await runCollecting(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE} AS b\nRUN mkdir /out && echo archived > /out/file.txt\nFROM scratch\nCOPY --from=b /out/ /\n`,
          outputs: [{ type: "tar", dest: sink }],
        }),
      );
      const files = await read;
      expect(files.get("file.txt")?.toString()).toBe("archived\n");
    });

    it("writes a docker archive whose manifest names the image and its layers", async () => {
      const out = tempDir("dockerarchive");
      const name = `bkn-archive-${Date.now().toString(36)}:v1`;
      try {
        const dest = join(out.path, "image.tar");
        await runCollecting(
          bk.build({
            context: { files: {} },
            dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo layer > /layer.txt\n`,
            outputs: [{ type: "docker", dest, name }],
          }),
        );
        const files = await readTar(createReadStream(dest));
        const manifest = JSON.parse(files.get("manifest.json")!.toString()) as { Config: string; RepoTags: string[]; Layers: string[] }[];
        expect(manifest).toHaveLength(1);
        expect(manifest[0]!.RepoTags).toEqual([name]);
        expect(manifest[0]!.Layers.length).toBeGreaterThanOrEqual(2); // busybox + our RUN
        for (const layer of manifest[0]!.Layers) expect(files.has(layer)).toBe(true);
        const config = JSON.parse(files.get(manifest[0]!.Config)!.toString()) as { rootfs: { diff_ids: string[] } };
        expect(config.rootfs.diff_ids).toHaveLength(manifest[0]!.Layers.length);
      } finally {
        out.remove();
      }
    });

    it("writes an OCI layout archive (refused with a clear error by dockerd's BuildKit)", async () => {
      const out = tempDir("ociarchive");
      try {
        const dest = join(out.path, "oci.tar");
        const run = bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo oci > /oci.txt\n`,
          outputs: [{ type: "oci", dest, name: "example.com/oci:v1" }],
        });
        if (daemon.embeddedInDocker) {
          const { error } = await failureOf(run);
          expect(error).toMatchObject({ code: "UNIMPLEMENTED" });
          expect(existsSync(dest)).toBe(false);
          return;
        }
        await runCollecting(run);
        const files = await readTar(createReadStream(dest));
        expect(JSON.parse(files.get("oci-layout")!.toString())).toMatchObject({ imageLayoutVersion: "1.0.0" });
        const index = JSON.parse(files.get("index.json")!.toString()) as { manifests: { digest: string; mediaType: string }[] };
        expect(index.manifests).toHaveLength(1);
        const blob = (digest: string) => files.get(`blobs/${digest.replace(":", "/")}`);
        const manifest = JSON.parse(blob(index.manifests[0]!.digest)!.toString()) as { config: { digest: string }; layers: { digest: string }[] };
        expect(manifest.layers.length).toBeGreaterThanOrEqual(2);
        for (const layer of manifest.layers) expect(blob(layer.digest)).toBeDefined();
        expect(blob(manifest.config.digest)).toBeDefined();
      } finally {
        out.remove();
      }
    });

    it("loads into the local Docker Engine, failing at once when it is not there; dockerd's BuildKit loads into its own", async () => {
      const saved = process.env.DOCKER_HOST;
      process.env.DOCKER_HOST = "unix:///run/buildkit-node-test/no-docker.sock";
      const name = `bkn-load-elsewhere-${Date.now().toString(36)}:latest`;
      try {
        await using fresh = await connect(daemon.address, daemon.connectOptions);
        const run = fresh.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo big > /f\n`,
          outputs: [{ type: "docker", load: true, name }],
        });
        if (daemon.embeddedInDocker) {
          // The moby exporter stores the image in the dockerd that built it: DOCKER_HOST plays no part.
          await runCollecting(run);
          expect(execFileSync("/usr/bin/docker", ["image", "inspect", "--format", "{{.Id}}", name], { encoding: "utf8", env: { ...process.env, DOCKER_HOST: "" } })).toMatch(/^sha256:/);
          return;
        }
        const { error } = await failureOf(run);
        expect(error).toBeInstanceOf(Error);
        expect((error as Error).message).toMatch(/no-docker\.sock|Docker Engine/);
      } finally {
        if (saved === undefined) delete process.env.DOCKER_HOST;
        else process.env.DOCKER_HOST = saved;
        if (daemon.embeddedInDocker) execFileSync("/usr/bin/docker", ["rmi", "-f", name], { stdio: "ignore", env: { ...process.env, DOCKER_HOST: "" } });
      }
    });

    it("exports to several outputs in one solve on BuildKit v0.13+ (an image pushed, an OCI layout, the files), and refuses on older ones", async () => {
      const repository = uniqueRepository("bkn-several");
      const out = tempDir("several-out");
      try {
        const ociSink = new PassThrough();
        const oci = readTar(ociSink);
        const run = bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo several > /several.txt\n`,
          outputs: [
            { type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true, insecure: true },
            { type: "oci", dest: ociSink, name: `${PLAIN_REGISTRY}/${repository}:v1` },
            { type: "local", dest: out.path },
          ],
        });
        if (daemon.embeddedInDocker) {
          // BuildKit before v0.13 takes one exporter per solve.
          ociSink.end();
          const { error, events } = await failureOf(run);
          expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
          expect((error as Error).message).toMatch(/one output per build \(BuildKit before v0\.13\); 3 were given/);
          expect(events).toEqual([]);
          return;
        }
        const { result } = await runCollecting(run);
        // The image, in the registry.
        const pushed = await getManifest(PLAIN_REGISTRY, repository, "v1");
        expect(result.pushed.map((p) => p.name)).toEqual([`${PLAIN_REGISTRY}/${repository}:v1`]);
        // The OCI layout: its index names a manifest whose blobs are all there.
        const files = await oci;
        const index = JSON.parse(files.get("index.json")!.toString()) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
        expect(index.manifests).toHaveLength(1);
        const blob = (digest: string) => files.get(`blobs/${digest.replace(":", "/")}`);
        const manifest = JSON.parse(blob(index.manifests[0]!.digest)!.toString()) as { config: { digest: string }; layers: { digest: string }[] };
        for (const layer of manifest.layers) expect(blob(layer.digest)).toBeDefined();
        // The same image both ways: the same config.
        expect(manifest.config.digest).toBe(pushed.config.digest);
        // The files.
        expect(readFileSync(join(out.path, "several.txt"), "utf8")).toBe("several\n");
      } finally {
        out.remove();
      }
    });
  });

  describe("registries", () => {
    it("pushes under several names, each readable from the registry", async () => {
      const repository = uniqueRepository("bkn-multi");
      const names = [`${PLAIN_REGISTRY}/${repository}:a`, `${PLAIN_REGISTRY}/${repository}:b`];
      const { result } = await runCollecting(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo two tags > /tags\n`,
          outputs: [{ type: "image", name: names.join(","), push: true, insecure: true }],
        }),
      );
      const [a, b] = await Promise.all([getManifest(PLAIN_REGISTRY, repository, "a"), getManifest(PLAIN_REGISTRY, repository, "b")]);
      expect(a.digest).toMatch(/^sha256:/);
      expect(b.digest).toBe(a.digest);
      expect(result.pushed.map((p) => p.digest)).toEqual([a.digest, a.digest]);
    });

    it("pulls from and pushes to the htpasswd registry with credentials given in code", async () => {
      const repository = uniqueRepository("bkn-auth");
      const auth = { username: AUTH_USER, password: AUTH_PASSWORD };
      await runCollecting(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${AUTH_REGISTRY}/busybox:latest\nLABEL pulled.with=credentials\n`,
          pull: true, // resolve through the registry even though dockerd has the image
          registryAuth: { [AUTH_REGISTRY]: auth },
          outputs: [{ type: "image", name: `${AUTH_REGISTRY}/${repository}:v1`, push: true, insecure: true }],
        }),
      );
      const config = await getImageConfig(AUTH_REGISTRY, repository, "v1", auth);
      expect(config.config.Labels).toMatchObject({ "pulled.with": "credentials" });
    });

    it("fails with a clear auth error when the password is wrong, and never shows the password", async () => {
      const password = "definitely-wrong-password-41";
      const { error, events } = await failureOf(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${AUTH_REGISTRY}/busybox:latest\n`,
          pull: true,
          registryAuth: { [AUTH_REGISTRY]: { username: AUTH_USER, password } },
        }),
      );
      expect(error).toBeInstanceOf(BuildError);
      expect((error as Error).message).toMatch(/401|unauthorized|authoriz/i);
      for (let e: unknown = error; e instanceof Error; e = e.cause) expect(e.message).not.toContain(password);
      expect(JSON.stringify(events)).not.toContain(password);
    });

    it("fails the push with an auth error when the password is wrong", async () => {
      const repository = uniqueRepository("bkn-authpush");
      const { error } = await failureOf(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\n`,
          registryAuth: { [AUTH_REGISTRY]: { username: AUTH_USER, password: "wrong" } },
          outputs: [{ type: "image", name: `${AUTH_REGISTRY}/${repository}:v1`, push: true, insecure: true }],
        }),
      );
      if (daemon.embeddedInDocker) {
        // Pushed by the client through the Engine API.
        expect(error).toMatchObject({ code: "UNAUTHENTICATED" });
        expect((error as Error).message).toContain(`${AUTH_REGISTRY}/${repository}`);
      } else {
        // Pushed by BuildKit's image exporter.
        expect(error).toBeInstanceOf(BuildError);
        expect((error as Error).message).toMatch(/401|unauthorized/i);
      }
    });
  });

  describe("a rebuild", () => {
    it("sends only the file that changed", async () => {
      const ctx = tempDir("rebuild");
      try {
        writeFileSync(join(ctx.path, "Dockerfile"), "FROM scratch\nCOPY . /\n");
        writeFileSync(join(ctx.path, "big.bin"), Buffer.alloc(4 * 1024 * 1024, 7));
        writeFileSync(join(ctx.path, "small.txt"), "one");
        const transferred = async () => {
          const { events } = await runCollecting(bk.build({ context: ctx.path, noCache: true }));
          const bars = events.filter((e) => e.type === "progress" && e.id.startsWith("transferring context"));
          return Math.max(0, ...bars.map((e) => (e.type === "progress" ? e.current : 0)));
        };
        const first = await transferred();
        writeFileSync(join(ctx.path, "small.txt"), "two!");
        const second = await transferred();
        expect(first).toBeGreaterThanOrEqual(4 * 1024 * 1024);
        expect(second).toBeLessThan(64 * 1024);
      } finally {
        ctx.remove();
      }
    });
  });
});
