// `buildkit-node build` as a child process on each test daemon and the local
// registry: pushes checked through the registry's API, flags checked in what
// the build produced, failures in what the command prints.
import { execFileSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { dockerApi } from "./support/docker-api.js";
import { BASE_IMAGE, getImageConfig, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";
import { builderFlags, cliBinary, cliEnv, runCli, scratchDir } from "./cli-harness.js";

beforeAll(async () => {
  await cliBinary();
});

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  beforeAll(() => assertDaemon(daemon));
  const BUILDER = builderFlags(daemon);

  describe("build and push", () => {
    it("pushes every tag, and --metadata-file holds the digest the registry serves", async () => {
      const repo = uniqueRepository("bkn-cli-push");
      const image = `${PLAIN_REGISTRY}/${repo}`;
      const out = scratchDir("push");
      try {
        const metadataFile = join(out.path, "meta", "metadata.json");
        const result = await runCli(["build", ...BUILDER, "-q", "-t", `${image}:v1`, "-t", `${image}:latest`, "--push", "--metadata-file", metadataFile, "fixtures/hello"]);
        expect(result.stderr).toBe("");
        expect(result.code).toBe(0);

        const manifest = await getManifest(PLAIN_REGISTRY, repo, "v1");
        expect(manifest.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect((await getManifest(PLAIN_REGISTRY, repo, "latest")).digest).toBe(manifest.digest);

        const metadata = JSON.parse(readFileSync(metadataFile, "utf8")) as Record<string, unknown>;
        expect(metadata["containerimage.digest"]).toBe(manifest.digest);
        expect(metadata["image.name"]).toBe(`${image}:v1,${image}:latest`);
        expect(metadata["buildkit-node.build.ref"]).toMatch(/^[0-9a-f]{25}$/);
        // -q: the digest, alone, on stdout.
        expect(result.stdout.toString()).toBe(`${manifest.digest}\n`);
      } finally {
        out.remove();
      }
    });

    it("passes -f (relative to the current directory), --target, --build-arg, --label and --no-cache to the build", async () => {
      const repo = uniqueRepository("bkn-cli-flags");
      const image = `${PLAIN_REGISTRY}/${repo}:v1`;
      const nonce = randomUUID(); // this run's own step: identical steps of builds in flight at once are merged
      const dir = scratchDir("flags", {
        "app/data.txt": "data\n",
        "docker/Custom.Dockerfile": [
          `FROM ${BASE_IMAGE} AS base`,
          "ARG GREETING=hello",
          "ARG FROM_ENV=unset",
          "ENV GREETING=$GREETING FROM_ENV=$FROM_ENV",
          "COPY data.txt /data.txt",
          `RUN : ${nonce} && date +%s%N > /built-at`,
          "FROM base AS chosen",
          "LABEL stage=chosen",
          "FROM base AS final",
          "LABEL stage=final",
          "",
        ].join("\n"),
      });
      try {
        const args = [
          "build",
          ...BUILDER,
          "--progress=plain",
          "-f", "docker/Custom.Dockerfile",
          "--target", "chosen",
          "--build-arg", "GREETING=hej",
          "--build-arg", "FROM_ENV",
          "--build-arg", "NOT_IN_ENV",
          "--label", "com.example.cli=yes",
          "--no-cache",
          "-t", image,
          "--push",
          "app",
        ];
        const env = cliEnv({ FROM_ENV: "from-the-environment", NOT_IN_ENV: undefined });
        // The same build without --no-cache first, so that only --no-cache can make the RUN step run again.
        const primed = await runCli(args.filter((arg) => arg !== "--no-cache" && arg !== "--push"), { cwd: dir.path, env });
        expect(primed.code, primed.stderr).toBe(0);
        const result = await runCli(args, { cwd: dir.path, env });
        expect(result.code, result.stderr).toBe(0);

        const config = await getImageConfig(PLAIN_REGISTRY, repo, "v1");
        expect(config.config.Env).toEqual(expect.arrayContaining(["GREETING=hej", "FROM_ENV=from-the-environment"]));
        expect(config.config.Labels).toMatchObject({ stage: "chosen", "com.example.cli": "yes" });
        // --no-cache: the RUN step ran rather than coming from the cache.
        expect(result.stderr).toMatch(new RegExp(String.raw`^#(\d+) \[base \d\/\d\] RUN : ${nonce} && date \+%s%N > \/built-at\n(?:#\1 .*\n)*?#\1 DONE \d+\.\ds$`, "m"));
        expect(result.stderr).not.toMatch(/&& date[^\n]*\n#\d+ CACHED/);
      } finally {
        dir.remove();
      }
    });
  });

  describe("outputs in buildx's syntax", () => {
    it("pushes with -o type=image,push=true and the metadata file holds the digest the registry serves", async () => {
      const repo = uniqueRepository("bkn-cli-output");
      const out = scratchDir("image-output");
      try {
        const metadataFile = join(out.path, "metadata.json");
        const result = await runCli(
          ["build", ...BUILDER, "--progress=plain", "-t", `${PLAIN_REGISTRY}/${repo}:v1`, "-o", "type=image,push=true,registry.insecure=true", "--metadata-file", metadataFile, "fixtures/hello"],
        );
        expect(result.code, result.stderr).toBe(0);
        const manifest = await getManifest(PLAIN_REGISTRY, repo, "v1");
        const metadata = JSON.parse(readFileSync(metadataFile, "utf8")) as Record<string, unknown>;
        expect(metadata["containerimage.digest"]).toBe(manifest.digest);
        if (daemon.embeddedInDocker) {
          // dockerd stores the image (moby exporter), and the client pushes it through the Engine: no descriptor.
          expect(metadata["containerimage.descriptor"]).toBeUndefined();
        } else {
          // BuildKit's image exporter pushed it, and describes what it pushed (base64 JSON, decoded).
          expect(metadata["containerimage.descriptor"]).toMatchObject({ digest: manifest.digest, mediaType: manifest.mediaType });
        }
      } finally {
        out.remove();
      }
    });
  });

  describe("contexts and outputs", () => {
    const files = {
      Dockerfile: `FROM ${BASE_IMAGE}\nARG WHO=nobody\nCOPY msg.txt /msg.txt\nRUN echo "hello $WHO" > /hello.txt\n`,
      "msg.txt": "from the context\n",
    };

    it('reads the context as a tarball from stdin with "-" and exports files with -o type=local', async () => {
      const ctx = scratchDir("stdin", files);
      const out = scratchDir("stdin-out");
      try {
        const tarball = execFileSync("tar", ["-C", ctx.path, "-czf", "-", "."]);
        const result = await runCli(["build", ...BUILDER, "--progress=plain", "--build-arg", "WHO=stdin", "-o", `type=local,dest=${out.path}`, "-"], { input: tarball });
        expect(result.code, result.stderr).toBe(0);
        expect(readFileSync(join(out.path, "hello.txt"), "utf8")).toBe("hello stdin\n");
        expect(readFileSync(join(out.path, "msg.txt"), "utf8")).toBe("from the context\n");
      } finally {
        ctx.remove();
        out.remove();
      }
    });

    it('reads the Dockerfile from stdin with -f -, and "-o DIR" is a local export', async () => {
      const ctx = scratchDir("dockerfile-stdin", { "msg.txt": "from the context\n" });
      const out = scratchDir("dockerfile-stdin-out");
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=quiet", "-f", "-", "-o", out.path, ctx.path], { input: files.Dockerfile });
        expect(result.code, result.stderr).toBe(0);
        expect(readFileSync(join(out.path, "hello.txt"), "utf8")).toBe("hello nobody\n");
      } finally {
        ctx.remove();
        out.remove();
      }
    });

    it('writes a tar archive of the result to stdout with "-o -", progress staying on stderr', async () => {
      const ctx = scratchDir("tar-stdout", files);
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=plain", "-o", "-", ctx.path]);
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).toMatch(/^#\d+ DONE/m);
        const listing = execFileSync("tar", ["-tf", "-"], { input: result.stdout, encoding: "utf8" }).split("\n");
        expect(listing).toEqual(expect.arrayContaining(["hello.txt", "msg.txt"]));
        const hello = execFileSync("tar", ["-xOf", "-", "hello.txt"], { input: result.stdout, encoding: "utf8" });
        expect(hello).toBe("hello nobody\n");
      } finally {
        ctx.remove();
      }
    });

    it("loads the image into Docker with --load, named after the first tag", async () => {
      const ctx = scratchDir("load", files);
      const name = `bkn-cli-load-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}:v1`;
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=plain", "--build-arg", "WHO=docker", "--load", "-t", name, ctx.path]);
        expect(result.code, result.stderr).toBe(0);
        const inspected = await dockerApi("GET", `/images/${name}/json`);
        expect(inspected.status).toBe(200);
        expect((JSON.parse(inspected.body) as { RepoTags: string[] }).RepoTags).toContain(name);
      } finally {
        await dockerApi("DELETE", `/images/${name}?force=1`).catch(() => {});
        ctx.remove();
      }
    });

    it("passes a secret from the environment to RUN --mount=type=secret without printing it", async () => {
      const secret = `s3cret-${Math.random().toString(36).slice(2)}`;
      const ctx = scratchDir("secret", {
        // The step's text is this run's own (see build-lifecycle.test.ts: identical steps in flight are merged).
        Dockerfile: `FROM ${BASE_IMAGE}\nRUN --mount=type=secret,id=token : ${randomUUID()} && sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sha256 && echo secret mounted\n`,
      });
      const out = scratchDir("secret-out");
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=plain", "--no-cache", "--secret", "id=token,env=CLI_TEST_TOKEN", "-o", `type=local,dest=${out.path}`, ctx.path], {
          env: cliEnv({ CLI_TEST_TOKEN: secret }),
        });
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).toMatch(/^#\d+ \d+\.\d{3} secret mounted$/m);
        expect(readFileSync(join(out.path, "token.sha256"), "utf8").trim()).toBe(createHash("sha256").update(secret).digest("hex"));
        expect(result.stderr).not.toContain(secret);
        expect(existsSync(join(out.path, "run/secrets/token"))).toBe(false);
      } finally {
        ctx.remove();
        out.remove();
      }
    });
  });

  describe("a failed build", () => {
    it("exits 1 and prints the failing step, its last output and the error", async () => {
      const ctx = scratchDir("fail", { Dockerfile: `FROM ${BASE_IMAGE}\nRUN echo about to fail && echo on stderr >&2 && exit 3\n` });
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=plain", "--no-cache", ctx.path]);
        expect(result.code).toBe(1);
        // The step's stdout and stderr lines, in whichever order they arrived.
        const block = /------\n > \[2\/2\] RUN echo about to fail && echo on stderr >&2 && exit 3:\n((?: {3}.*\n)+)------\n/.exec(result.stderr);
        expect(block?.[1]?.split("\n").filter(Boolean).sort()).toEqual(["   about to fail", "   on stderr"]);
        expect(result.stderr).toMatch(/^#\d+ ERROR: .*exit code: 3$/m);
        expect(result.stderr).toMatch(/\nERROR: build failed at "\[2\/2\] RUN echo about to fail.*exit code: 3\n$/);
        if (!daemon.embeddedInDocker) {
          // BuildKit v0.9+ names the Dockerfile line of the step (dockerd's v0.8 does not).
          expect(result.stderr).toContain("------\nDockerfile:2\n--------------------\n");
          expect(result.stderr).toMatch(/^ {3}2 \| >>> RUN echo about to fail && echo on stderr >&2 && exit 3\n/m);
        }
      } finally {
        ctx.remove();
      }
    });

    it("shows the Dockerfile line of a syntax error", async () => {
      const ctx = scratchDir("syntax", { "build.Dockerfile": `FROM ${BASE_IMAGE}\nRUN echo fine\nBOGUS instruction\n` });
      try {
        const result = await runCli(["build", ...BUILDER, "--progress=quiet", "-f", join(ctx.path, "build.Dockerfile"), ctx.path]);
        expect(result.code).toBe(1);
        expect(result.stderr.split("\n")).toEqual([
          "build.Dockerfile:3",
          "--------------------",
          `   1 |     FROM ${BASE_IMAGE}`,
          "   2 |     RUN echo fine",
          "   3 | >>> BOGUS instruction",
          "   4 |",
          "--------------------",
          expect.stringMatching(/^ERROR: build failed: .*unknown instruction: BOGUS$/),
          "",
        ]);
      } finally {
        ctx.remove();
      }
    });
  });
});
