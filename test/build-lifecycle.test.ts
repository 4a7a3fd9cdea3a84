// Secrets, SSH, cancellation, concurrency and cleanup of builds against the
// real BuildKit inside dockerd.
import { execFileSync } from "node:child_process";
import { createHash, generateKeyPairSync, randomUUID } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { AbortError, connect } from "../src/index.js";
import { failureOf, logLines, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDockerd, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE } from "./support/registry.js";

assertDockerd();

/** Every regular file under `dir`, recursively. */
function allFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return allFiles(path);
    return entry.isFile() ? [path] : [];
  });
}

/** Sockets, timers and child processes alive in this process, by kind. */
function liveResources(): Record<string, number> {
  const kinds = ["TCPSocketWrap", "TCPWrap", "PipeWrap", "TLSWrap", "Timeout", "ProcessWrap"];
  const counts = Object.fromEntries(kinds.map((k) => [k, 0]));
  for (const resource of process.getActiveResourcesInfo()) if (resource in counts) counts[resource]!++;
  return counts;
}

/** Waits until no kind of resource outnumbers what there was before. */
async function expectNoLeaks(before: Record<string, number>): Promise<void> {
  await expect
    .poll(() => Object.entries(liveResources()).filter(([kind, n]) => n > (before[kind] ?? 0)), { timeout: 5_000 })
    .toEqual([]);
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  describe("secrets", () => {
    it("reaches RUN --mount=type=secret, and is absent from the image and from every event", async () => {
      const secret = `s3cr3t-${Date.now()}-value`;
      const out = tempDir("secret");
      await using bk = await connect(daemon.address, daemon.connectOptions);
      try {
        const { events } = await runCollecting(
          bk.build({
            context: { files: {} },
            dockerfileContent: [
              `FROM ${BASE_IMAGE}`,
              // The step's text is this run's own: BuildKit merges identical steps of builds in flight
              // at once (the secret is not part of a step's identity), whatever noCache says.
              `RUN --mount=type=secret,id=token : ${randomUUID()} && sha256sum /run/secrets/token | cut -d' ' -f1 > /token.sha256 && echo secret mounted`,
              "",
            ].join("\n"),
            secrets: { token: { value: secret } },
            noCache: true, // a secret is not part of a step's cache key
            outputs: [{ type: "local", dest: out.path }],
          }),
        );
        const expected = createHash("sha256").update(secret).digest("hex");
        expect(readFileSync(join(out.path, "token.sha256"), "utf8").trim()).toBe(expected);
        expect(logLines(events)).toContain("secret mounted");
        expect(JSON.stringify(events)).not.toContain(secret);
        for (const file of allFiles(out.path)) {
          if (statSync(file).size < 16 * 1024 * 1024) expect(readFileSync(file).includes(secret), file).toBe(false);
        }
      } finally {
        out.remove();
      }
    });

    it("fails clearly when a secret's file is missing, without building", async () => {
      await using bk = await connect(daemon.address, daemon.connectOptions);
      const { error } = await failureOf(
        bk.build({ context: { files: {} }, dockerfileContent: "FROM scratch\n", secrets: { npmrc: { file: "/nonexistent/.npmrc" } } }),
      );
      expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
      expect((error as Error).message).toContain("npmrc");
    });
  });

  describe("ssh", () => {
    it("forwards an agent to RUN --mount=type=ssh", async () => {
      const keys = tempDir("sshkey");
      await using bk = await connect(daemon.address, daemon.connectOptions);
      try {
        const { privateKey } = generateKeyPairSync("ed25519");
        const keyFile = join(keys.path, "id_ed25519");
        writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
        const { events } = await runCollecting(
          bk.build({
            context: { files: {} },
            dockerfileContent: `FROM ${BASE_IMAGE}\nRUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "agent socket at $SSH_AUTH_SOCK"\n`,
            ssh: [{ id: "default", keys: [keyFile] }],
            noCache: true,
          }),
        );
        expect(logLines(events).some((line) => line.startsWith("agent socket at /"))).toBe(true);
      } finally {
        keys.remove();
      }
    });
  });

  describe("cancellation", () => {
    it("abort mid-build rejects with an AbortError and leaves nothing running", async () => {
      const before = liveResources();
      const bk = await connect(daemon.address, daemon.connectOptions);
      const controller = new AbortController();
      const run = bk.build({
        context: { files: {} },
        dockerfileContent: `FROM ${BASE_IMAGE}\nRUN echo started && sleep 120\n`,
        noCache: true,
        signal: controller.signal,
      });
      const seen: string[] = [];
      for await (const event of run.events) {
        if (event.type === "log") seen.push(event.line);
        if (event.type === "log" && event.line === "started") controller.abort(new Error("user pressed stop"));
      }
      const error = await run.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(AbortError);
      expect(error).toMatchObject({ name: "AbortError", code: "CANCELED" });
      expect(seen).toContain("started");
      await bk.close();
      await expectNoLeaks(before);
    });

    it("abort while an upload stalls ends the read and destroys the upload stream", async () => {
      await using bk = await connect(daemon.address, daemon.connectOptions);
      const stalled = new Readable({ read() {} }); // one chunk, then nothing: a client gone quiet
      stalled.push(Buffer.alloc(1024));
      const controller = new AbortController();
      const run = bk.build({ context: { tar: stalled }, signal: controller.signal });
      setTimeout(() => controller.abort(new Error("user gave up")), 200);
      const error = await run.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(AbortError);
      expect(stalled.destroyed).toBe(true);
    });

    it("an already aborted signal rejects at once", async () => {
      await using bk = await connect(daemon.address, daemon.connectOptions);
      const { error } = await failureOf(bk.build({ context: { files: {} }, dockerfileContent: "FROM scratch\n", signal: AbortSignal.abort() }));
      expect(error).toBeInstanceOf(AbortError);
    });
  });

  describe("concurrency and cleanup", () => {
    it("runs 5 builds at once on one client, each with its own result", async () => {
      await using bk = await connect(daemon.address, daemon.connectOptions);
      const outs = Array.from({ length: 5 }, (_, i) => tempDir(`concurrent-${i}`));
      try {
        await Promise.all(
          outs.map((out, i) =>
            runCollecting(
              bk.build({
                context: { files: { "n.txt": `build ${i}\n` } },
                dockerfileContent: `FROM ${BASE_IMAGE} AS b\nCOPY n.txt /n.txt\nRUN cat /n.txt > /out.txt && echo done ${i}\nFROM scratch\nCOPY --from=b /out.txt /\n`,
                outputs: [{ type: "local", dest: out.path }],
              }),
            ),
          ),
        );
        outs.forEach((out, i) => expect(readFileSync(join(out.path, "out.txt"), "utf8")).toBe(`build ${i}\n`));
      } finally {
        for (const out of outs) out.remove();
      }
    });

    it("leaves no socket, timer or child process behind once the client is closed", async () => {
      const children = () => execFileSync("ps", ["-o", "pid=", "--ppid", String(process.pid)], { encoding: "utf8" }).trim().split("\n").filter(Boolean).length;
      const beforeResources = liveResources();
      const beforeChildren = children();
      const bk = await connect(daemon.address, daemon.connectOptions);
      await runCollecting(bk.build({ context: "fixtures/hello" }));
      await bk.close();
      await expectNoLeaks(beforeResources);
      expect(children()).toBe(beforeChildren);
    });
  });
});
