// Hostile and unlucky input, against the real daemons: streams handed over
// by child processes, empty and bomb tarballs, contexts without their
// Dockerfile, and options a plain-JavaScript caller can get wrong.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BuildKitNodeError, type BuildKitClient, type BuildOptions, connect } from "../src/index.js";
import { failureOf, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { activeResources, expectNoLeaks, gzipBomb, tarFile } from "./support/faults.js";
import { BASE_IMAGE } from "./support/registry.js";

/** Reads a tar stream's entry names and contents (small archives only). */
async function tarContents(chunks: AsyncIterable<Buffer>): Promise<Map<string, string>> {
  const { extract } = await import("tar-stream");
  const files = new Map<string, string>();
  const ex = extract();
  const feeding = Readable.from(chunks).pipe(ex);
  for await (const entry of feeding as AsyncIterable<{ header: { name: string }; [Symbol.asyncIterator](): AsyncIterator<Buffer> }>) {
    const parts: Buffer[] = [];
    for await (const part of entry) parts.push(part);
    files.set(entry.header.name.replace(/^\.\//, ""), Buffer.concat(parts).toString());
  }
  return files;
}

/** Runs `fn` with os.tmpdir() pointing at a fresh directory; returns what is left in it. */
async function inOwnTmpdir(fn: () => Promise<void>): Promise<string[]> {
  const dir = tempDir("faults-tmp");
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = dir.path;
  try {
    await fn();
    return readdirSync(dir.path);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    dir.remove();
  }
}

function codeOf(err: unknown): string | undefined {
  return err instanceof BuildKitNodeError ? err.code : undefined;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  let project: { path: string; remove(): void };
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
    project = tempDir("faults-project");
    mkdirSync(join(project.path, "src"));
    writeFileSync(join(project.path, "Dockerfile"), `FROM ${BASE_IMAGE}\nCOPY . /ctx\n`);
    writeFileSync(join(project.path, "src", "hello.txt"), "hello from the tree\n");
    execFileSync("git", ["init", "-q", project.path]);
    execFileSync("git", ["-C", project.path, "add", "."]);
    execFileSync("git", ["-C", project.path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tree"]);
  });
  afterAll(async () => {
    await bk?.close();
    project?.remove();
  });
  let before: string[];
  beforeEach(() => {
    before = activeResources();
  });
  afterEach(async (context) => {
    // No child, socket or timer left behind by a refused or finished build.
    if (context.task.result?.state !== "fail") await expectNoLeaks(before, context.task.name);
  });

  /** Builds `context` and returns the files of the result (the context's copy under /ctx). */
  async function builtFiles(context: BuildOptions["context"]): Promise<Map<string, string>> {
    const archive = new PassThrough();
    const files = tarContents(archive);
    await runCollecting(bk.build({ context, outputs: [{ type: "tar", dest: archive }] }));
    return files;
  }

  describe("a stream given as { tar } is taken in hand before anything is awaited", () => {
    it("a child's stdout (tar -cf - .) brings every file, every time", async () => {
      for (let i = 0; i < 5; i++) {
        const child = spawn("tar", ["-cf", "-", "."], { cwd: project.path, stdio: ["ignore", "pipe", "inherit"] });
        const files = await builtFiles({ tar: child.stdout });
        expect(files.get("ctx/src/hello.txt"), `build ${i + 1}`).toBe("hello from the tree\n");
        expect(files.get("ctx/Dockerfile")).toContain("COPY . /ctx");
      }
    });

    it("git archive's stdout (gzip) brings every file, every time", async () => {
      for (let i = 0; i < 5; i++) {
        const child = spawn("git", ["-C", project.path, "archive", "--format=tar.gz", "HEAD"], { stdio: ["ignore", "pipe", "inherit"] });
        const files = await builtFiles({ tar: child.stdout });
        expect(files.get("ctx/src/hello.txt"), `build ${i + 1}`).toBe("hello from the tree\n");
      }
    });

    it("a child that exited before the build looked at its output still brings its files", async () => {
      const child = spawn("tar", ["-cf", "-", "."], { cwd: project.path, stdio: ["ignore", "pipe", "inherit"] });
      const run = bk.build({ context: { tar: child.stdout }, outputs: [{ type: "tar", dest: new PassThrough().resume() }] });
      await new Promise((resolve) => child.once("exit", resolve));
      await expect(run).resolves.toMatchObject({ ref: run.ref });
    });
  });

  describe("tarballs that cannot be a context", () => {
    it("an empty stream (0 bytes) is refused as an empty tarball", async () => {
      const { error } = await failureOf(bk.build({ context: { tar: Readable.from([]) } }));
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/the tarball is empty \(0 bytes\)/);
    });

    it("a tarball without entries (only its end blocks) is refused as such", async () => {
      const { error } = await failureOf(bk.build({ context: { tar: Readable.from([Buffer.alloc(1024)]) } }));
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/holds no entries/);
    });

    it("a tar context without the Dockerfile it names is refused before the solve, naming it", async () => {
      const { error, events } = await failureOf(
        bk.build({ context: { tar: Readable.from([tarFile("app/main.sh", "echo hi\n"), Buffer.alloc(1024)]) }, dockerfile: "build/Dockerfile" }),
      );
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/the tar context has no Dockerfile at "build\/Dockerfile"/);
      expect(events).toEqual([]); // the daemon never started anything
    });

    it("a files context without a Dockerfile is refused before the solve", async () => {
      const { error, events } = await failureOf(bk.build({ context: { files: { "main.sh": "echo hi\n" } } }));
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/the files context has no Dockerfile at "Dockerfile"/);
      expect(events).toEqual([]);
    });

    it("a gzip bomb (4 MB → 4 GiB) is refused with RESOURCE_EXHAUSTED early, and nothing is left on disk", async () => {
      const bomb = gzipBomb(`FROM ${BASE_IMAGE}\n`, 4 * 1024 ** 3);
      const total = bomb.reduce((n, c) => n + c.length, 0);
      let sent = 0;
      const upload = Readable.from(
        (function* () {
          for (const chunk of bomb) {
            sent += chunk.length;
            yield chunk;
          }
        })(),
      );
      let error: unknown;
      const started = Date.now();
      const left = await inOwnTmpdir(async () => {
        ({ error } = await failureOf(bk.build({ context: { tar: upload } })));
      });
      console.log(`[${daemon.name}] gzip bomb of ${(total / 1e6).toFixed(1)} MB refused after ${Date.now() - started} ms, ${(sent / 1e6).toFixed(1)} MB read`);
      expect(codeOf(error)).toBe("RESOURCE_EXHAUSTED");
      expect((error as Error).message).toMatch(/over 100× \(tarLimits\.maxCompressionRatio\)/);
      expect(sent).toBeLessThan(total / 4); // refused long before its end
      expect(upload.destroyed).toBe(true);
      expect(left).toEqual([]);
    });

    it("tarLimits.maxBytes refuses a plain tarball past it; raised, the same tarball builds", async () => {
      const tarball = () => [tarFile("Dockerfile", `FROM ${BASE_IMAGE}\n`), tarFile("data.bin", "x".repeat(300_000)), Buffer.alloc(1024)];
      const { error } = await failureOf(bk.build({ context: { tar: Readable.from(tarball()) }, tarLimits: { maxBytes: 200_000 } }));
      expect(codeOf(error)).toBe("RESOURCE_EXHAUSTED");
      expect((error as Error).message).toMatch(/larger than 195\.3 KiB once decompressed \(tarLimits\.maxBytes\)/);
      await runCollecting(bk.build({ context: { tar: Readable.from(tarball()) }, tarLimits: { maxBytes: 400_000 } }));
    });

    it("tarLimits.maxCompressionRatio raised lets a highly compressible context through", async () => {
      const zeros = gzipBomb(`FROM ${BASE_IMAGE}\n`, 128 * 1024 ** 2);
      const { error } = await failureOf(bk.build({ context: { tar: Readable.from(zeros) } }));
      expect(codeOf(error)).toBe("RESOURCE_EXHAUSTED");
      await runCollecting(bk.build({ context: { tar: Readable.from(zeros) }, tarLimits: { maxCompressionRatio: 10_000 } }));
    });

    it("tarLimits.maxEntries refuses a tarball with more entries", async () => {
      const entries = Array.from({ length: 20 }, (_, i) => tarFile(`f${i}`, "x"));
      const { error } = await failureOf(
        bk.build({ context: { tar: Readable.from([tarFile("Dockerfile", `FROM ${BASE_IMAGE}\n`), ...entries, Buffer.alloc(1024)]) }, tarLimits: { maxEntries: 10 } }),
      );
      expect(codeOf(error)).toBe("RESOURCE_EXHAUSTED");
      expect((error as Error).message).toMatch(/more than 10 entries \(tarLimits\.maxEntries\)/);
    });
  });
});
