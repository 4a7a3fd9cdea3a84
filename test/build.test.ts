// End-to-end builds through the public API against the real BuildKit inside
// dockerd (BuildKit v0.8): the session served from Node, the context streamed
// with fsutil DiffCopy, Solve with dockerfile.v0, progress, outputs, errors.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, lstatSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildError, type BuildKitClient, connect } from "../src/index.js";
import { failureOf, logLines, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDockerd, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE, getImageConfig, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on $name", (daemon) => {
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

  describe("failures", () => {
    it("a failing RUN rejects with a BuildError naming the step, with its exit code and log tail", async () => {
      const { error, events } = await failureOf(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo first line && echo "about to fail" >&2 && exit 3\n`,
        }),
      );
      expect(error).toBeInstanceOf(BuildError);
      const err = error as BuildError;
      expect(err.code).toBe("BUILD_FAILED");
      expect(err.exitCode).toBe(3);
      expect(err.step?.name).toContain("RUN echo first line");
      expect(err.logTail).toContain("about to fail");
      expect(err.message).toContain("about to fail");
      expect(events.some((e) => e.type === "vertex.errored" && e.name.includes("RUN echo first line"))).toBe(true);
    });

    it("a Dockerfile syntax error rejects with its line", async () => {
      const { error } = await failureOf(
        bk.build({ context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\nRUN true\nNOTANINSTRUCTION foo\n` }),
      );
      expect(error).toBeInstanceOf(BuildError);
      expect((error as BuildError).line).toBe(3);
    });

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
      const config = await getImageConfig(PLAIN_REGISTRY, repository, "v1");
      expect(config.config.Labels).toMatchObject({ stage: "wanted", "com.example.team": "platform" });
      expect(config.config.Env).toContain("FLAVOUR=vanilla");
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
