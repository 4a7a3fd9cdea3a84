// End-to-end builds through the public API on each test daemon (dockerd's
// BuildKit v0.8, the standalone buildkitd v0.24): the session served from
// Node, the context streamed with fsutil DiffCopy, Solve with dockerfile.v0,
// progress, outputs, named contexts, attestations.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, lstatSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildKitClient, type BuildOptions, connect } from "../src/index.js";
import { failureOf, logLines, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDockerd, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE, getBlobJson, getImageConfig, getIndex, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  beforeAll(async () => {
    if (daemon.embeddedInDocker) assertDockerd();
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
  });

  describe("a multi-stage build", () => {
    it("runs RUN steps on the local base image and exports the result's files", async () => {
      const out = tempDir("multistage");
      try {
        const { result, events } = await runCollecting(
          bk.build({
            context: "fixtures/hello",
            buildArgs: { GREETING: "bonjour" },
            noCache: true, // so the RUN step runs (and logs) every time
            outputs: [{ type: "local", dest: out.path }],
          }),
        );
        const greet = readFileSync(join(out.path, "usr/local/bin/greet"), "utf8");
        expect(greet).toContain("bonjour from an image built by buildkit-node");
        expect(statSync(join(out.path, "usr/local/bin/greet")).mode & 0o111).not.toBe(0);
        expect(existsSync(join(out.path, "bin/busybox"))).toBe(true);
        // Progress: the RUN step started and completed, and its output arrived as lines.
        const run = events.find((e) => e.type === "vertex.completed" && e.name.includes("RUN echo"));
        expect(run).toBeDefined();
        expect(logLines(events)).toContain("building with greeting: bonjour");
        expect(result.ref).toMatch(/^[0-9a-f]{25}$/);
      } finally {
        out.remove();
      }
    });
  });

  describe("the context", () => {
    it("honours .dockerignore (** and ! exceptions) and keeps names, modes, links and empty dirs", async () => {
      const ctx = tempDir("ctx");
      const out = tempDir("ctx-out");
      try {
        const files: Record<string, string> = {
          "keep.txt": "keep",
          "with space é 😀.txt": "unicode",
          "logs/a.log": "dropped",
          "logs/deep/b.log": "dropped",
          "logs/deep/important.log": "kept by an exception",
          "src/main.c": "int main(){}",
          "src/gen/x.tmp": "dropped by **",
          "src/gen/y.c": "kept",
        };
        for (const [path, content] of Object.entries(files)) {
          mkdirSync(join(ctx.path, path, ".."), { recursive: true });
          writeFileSync(join(ctx.path, path), content);
        }
        writeFileSync(join(ctx.path, "run.sh"), "#!/bin/sh\necho hi\n");
        chmodSync(join(ctx.path, "run.sh"), 0o755);
        symlinkSync("keep.txt", join(ctx.path, "link-to-keep"));
        mkdirSync(join(ctx.path, "empty"));
        writeFileSync(join(ctx.path, ".dockerignore"), "logs\n!logs/deep/important.log\n**/*.tmp\n");
        writeFileSync(join(ctx.path, "Dockerfile"), "FROM scratch\nCOPY . /ctx/\n");

        await runCollecting(bk.build({ context: ctx.path, outputs: [{ type: "local", dest: out.path }] }));

        const root = join(out.path, "ctx");
        expect(readFileSync(join(root, "keep.txt"), "utf8")).toBe("keep");
        expect(readFileSync(join(root, "with space é 😀.txt"), "utf8")).toBe("unicode");
        expect(readFileSync(join(root, "logs/deep/important.log"), "utf8")).toBe("kept by an exception");
        expect(existsSync(join(root, "logs/a.log"))).toBe(false);
        expect(existsSync(join(root, "logs/deep/b.log"))).toBe(false);
        expect(existsSync(join(root, "src/gen/x.tmp"))).toBe(false);
        expect(readFileSync(join(root, "src/gen/y.c"), "utf8")).toBe("kept");
        expect(statSync(join(root, "run.sh")).mode & 0o777).toBe(0o755);
        expect(lstatSync(join(root, "link-to-keep")).isSymbolicLink()).toBe(true);
        expect(readlinkSync(join(root, "link-to-keep"))).toBe("keep.txt");
        expect(statSync(join(root, "empty")).isDirectory()).toBe(true);
        expect(readdirSync(join(root, "empty"))).toEqual([]);
      } finally {
        ctx.remove();
        out.remove();
      }
    });

    it("builds from files in memory, with the Dockerfile given apart", async () => {
      const out = tempDir("memory");
      try {
        await runCollecting(
          bk.build({
            context: { files: { "data/hello.txt": "from memory\n" } },
            dockerfileContent: "FROM scratch\nCOPY data/hello.txt /hello.txt\n",
            outputs: [{ type: "local", dest: out.path }],
          }),
        );
        expect(readFileSync(join(out.path, "hello.txt"), "utf8")).toBe("from memory\n");
      } finally {
        out.remove();
      }
    });
  });

  describe("named contexts", () => {
    it("serves local named contexts (a directory, files in memory) and maps a name to an image", async () => {
      const assets = tempDir("named-assets");
      const out = tempDir("named-out");
      try {
        writeFileSync(join(assets.path, "from-dir.txt"), "from a named directory\n");
        const run = bk.build({
          context: { files: {} },
          dockerfileContent: [
            "FROM base",
            "COPY --from=assets from-dir.txt /from-dir.txt",
            "COPY --from=generated from-memory.txt /from-memory.txt",
            "RUN cat /from-dir.txt /from-memory.txt > /both.txt",
            "",
          ].join("\n"),
          extraContexts: {
            base: `docker-image://${BASE_IMAGE}`,
            assets: assets.path,
            generated: { files: { "from-memory.txt": "from named files\n" } },
          },
          outputs: [{ type: "local", dest: out.path }],
        });
        if (daemon.embeddedInDocker) {
          // BuildKit v0.8's frontend would read each name as an image on Docker Hub: refused before anything runs.
          const { error, events } = await failureOf(run);
          expect(error).toMatchObject({ code: "UNIMPLEMENTED" });
          expect((error as Error).message).toMatch(/named contexts \(extraContexts\) need BuildKit v0\.10/);
          expect(events).toEqual([]);
          return;
        }
        await runCollecting(run);
        expect(readFileSync(join(out.path, "both.txt"), "utf8")).toBe("from a named directory\nfrom named files\n");
        expect(existsSync(join(out.path, "bin/busybox"))).toBe(true); // "base" was the busybox image
      } finally {
        assets.remove();
        out.remove();
      }
    });
  });

  describe("failures", () => {
    it("a missing Dockerfile is a clear INVALID_ARGUMENT before anything runs", async () => {
      const ctx = tempDir("nodockerfile");
      try {
        const { error } = await failureOf(bk.build({ context: ctx.path }));
        expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
        expect((error as Error).message).toContain(join(ctx.path, "Dockerfile"));
      } finally {
        ctx.remove();
      }
    });
  });

  describe("images", () => {
    it("pushes to the registry with build args, target and labels that read back from the image config", async () => {
      const repository = uniqueRepository("bkn-args");
      const name = `${PLAIN_REGISTRY}/${repository}:v1`;
      const { result } = await runCollecting(
        bk.build({
          context: { files: {} },
          dockerfileContent: [
            `FROM ${BASE_IMAGE} AS base`,
            "ARG FLAVOUR=plain",
            "ENV FLAVOUR=${FLAVOUR}",
            "FROM base AS wanted",
            "LABEL stage=wanted",
            "FROM base AS other",
            "LABEL stage=other",
            "",
          ].join("\n"),
          target: "wanted",
          buildArgs: { FLAVOUR: "vanilla" },
          labels: { "com.example.team": "platform" },
          outputs: [{ type: "image", name, push: true, insecure: true }],
        }),
      );
      const manifest = await getManifest(PLAIN_REGISTRY, repository, "v1");
      expect(result.pushed.map((p) => p.name)).toEqual([name]);
      expect(result.digest).toBe(manifest.digest);
      if (!daemon.embeddedInDocker) {
        // BuildKit's image exporter pushed it itself, and describes what it pushed.
        const descriptor = JSON.parse(Buffer.from(result.exporterResponse["containerimage.descriptor"]!, "base64").toString()) as { digest: string };
        expect(descriptor.digest).toBe(manifest.digest);
      }
      const config = await getImageConfig(PLAIN_REGISTRY, repository, "v1");
      expect(config.config.Labels).toMatchObject({ stage: "wanted", "com.example.team": "platform" });
      expect(config.config.Env).toContain("FLAVOUR=vanilla");
    });

    it("pushes a provenance attestation in the image's index, with the whole definition in max mode", async () => {
      const build = (provenance: BuildOptions["provenance"], tag: string) =>
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nARG FLAVOUR=plain\nRUN echo "$FLAVOUR" > /flavour\n`,
          buildArgs: { FLAVOUR: "attested" },
          ...(provenance !== undefined ? { provenance } : {}),
          outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:${tag}`, push: true, insecure: true }],
        });
      const repository = uniqueRepository("bkn-provenance");
      if (daemon.embeddedInDocker) {
        // dockerd's image store keeps no attestations: refused before anything runs.
        const { error, events } = await failureOf(build({ mode: "max" }, "max"));
        expect(error).toMatchObject({ code: "UNIMPLEMENTED" });
        expect((error as Error).message).toMatch(/provenance attestations need a standalone BuildKit v0\.11/);
        expect(events).toEqual([]);
        return;
      }
      const predicates: Record<string, Record<string, unknown>> = {};
      for (const mode of ["min", "max"] as const) {
        const { result } = await runCollecting(build({ mode }, mode));
        const index = await getIndex(PLAIN_REGISTRY, repository, mode);
        expect(result.digest).toBe(index.digest);
        const image = index.manifests.find((m) => m.platform?.os === "linux")!;
        const attestation = index.manifests.find((m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest")!;
        expect(attestation.annotations!["vnd.docker.reference.digest"]).toBe(image.digest);
        expect(attestation.platform).toEqual({ architecture: "unknown", os: "unknown" });
        const manifest = await getManifest(PLAIN_REGISTRY, repository, attestation.digest);
        const layer = manifest.layers[0] as { digest: string; mediaType?: string; annotations?: Record<string, string> };
        expect(layer.annotations?.["in-toto.io/predicate-type"]).toMatch(/^https:\/\/slsa\.dev\/provenance\//);
        const statement = await getBlobJson<{ subject: { digest: { sha256: string } }[]; predicate: Record<string, unknown> }>(PLAIN_REGISTRY, repository, layer.digest);
        expect(statement.subject.map((s) => `sha256:${s.digest.sha256}`)).toEqual([image.digest]);
        predicates[mode] = statement.predicate;
      }
      // Max mode records the build's whole definition and its build args; min mode neither.
      expect(predicates.max).toHaveProperty("buildConfig");
      expect(JSON.stringify(predicates.max)).toContain("attested");
      expect(predicates.min).not.toHaveProperty("buildConfig");
      expect(JSON.stringify(predicates.min)).not.toContain("attested");
      // Without the option, no attestation: a plain image manifest.
      await runCollecting(build(undefined, "none"));
      expect((await getManifest(PLAIN_REGISTRY, repository, "none")).mediaType).not.toMatch(/index|list/);
    });

    it("loads into Docker and the image runs", async () => {
      const name = `bkn-load-${Date.now().toString(36)}:latest`;
      try {
        await runCollecting(
          bk.build({
            context: { files: {} },
            dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo "loaded and running" > /message\nCMD ["cat", "/message"]\n`,
            outputs: [{ type: "docker", load: true, name }],
          }),
        );
        const output = execFileSync("/usr/bin/docker", ["run", "--rm", name], { encoding: "utf8", timeout: 60_000 });
        expect(output.trim()).toBe("loaded and running");
      } finally {
        execFileSync("/usr/bin/docker", ["rmi", "-f", name], { stdio: "ignore" });
      }
    });
  });
});
