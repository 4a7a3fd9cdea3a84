// Files of a directory context that the building process cannot read, on the
// real daemons. Root reads any file whatever its mode, so the client runs in
// a child process as `nobody` (with the docker group, for dockerd's socket),
// built from dist/ as users run it; its TLS material comes over stdin, never
// from files it could not read or from its command line.
import { spawn } from "node:child_process";
import { chmodSync, createReadStream, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import * as tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "./support/build-helpers.js";
import { announceSkip, assertDaemon, BUILD_DAEMONS, type BuildDaemon } from "./support/daemons.js";

const NOBODY = 65534;
const DIST = pathToFileURL(resolve("dist/index.js")).href;

/** Runs one build in the child and reports how it ended. */
const CHILD = `
import { connect } from ${JSON.stringify(DIST)};
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { address, connectOptions, build } = JSON.parse(input);
const bk = await connect(address, connectOptions);
const warnings = [];
try {
  const run = bk.build(build);
  for await (const event of run.events) if (event.type === "warning") warnings.push(event.message);
  await run;
  console.log(JSON.stringify({ ok: true, warnings }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, name: err.constructor.name, code: err.code, message: err.message, warnings }));
} finally {
  await bk.close();
}
`;

interface Outcome {
  ok: boolean;
  name?: string;
  code?: string;
  message?: string;
  warnings: string[];
}

function buildAsNobody(daemon: BuildDaemon, build: Record<string, unknown>, home: string): Promise<Outcome> {
  // dockerd's socket is root:docker 0660: the child gets the socket's group.
  const gid = daemon.embeddedInDocker ? statSync("/var/run/docker.sock").gid : NOBODY;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD], {
      uid: NOBODY,
      gid,
      env: { PATH: process.env.PATH ?? "", HOME: home },
      stdio: ["pipe", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (text: string) => (stdout += text));
    child.on("error", reject);
    child.on("close", (code) => {
      const line = stdout.trim().split("\n").at(-1) ?? "";
      try {
        resolvePromise(JSON.parse(line) as Outcome);
      } catch {
        reject(new Error(`the child exited with ${code}: ${stdout}`));
      }
    });
    child.stdin.end(JSON.stringify({ address: daemon.address, connectOptions: daemon.connectOptions, build }));
  });
}

async function tarFiles(file: string): Promise<Map<string, { type: string; size: number }>> {
  const entries = new Map<string, { type: string; size: number }>();
  const extract = tarStream.extract();
  const done = (async () => {
    for await (const entry of extract) {
      let size = 0;
      for await (const chunk of entry) size += (chunk as Buffer).length;
      entries.set(entry.header.name.replace(/^\.?\//, "").replace(/\/$/, ""), { type: entry.header.type ?? "file", size });
    }
  })();
  createReadStream(file).pipe(extract);
  await done;
  return entries;
}

const isRoot = process.getuid?.() === 0;
if (!isRoot) announceSkip("unreadable-file tests", "they need root, to run the client as another user");

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  const tmp = tempDir("unreadable");
  let context: string;
  let out: string;
  beforeAll(() => {
    if (!isRoot) return;
    assertDaemon(daemon);
    chmodSync(tmp.path, 0o755);
    out = join(tmp.path, "out");
    mkdirSync(out, { mode: 0o777 });
    chmodSync(out, 0o777);
    context = join(tmp.path, "context");
    mkdirSync(join(context, "private"), { recursive: true });
    writeFileSync(join(context, "Dockerfile"), "FROM scratch\nCOPY . /c/\n");
    writeFileSync(join(context, "readable.txt"), "hello\n");
    writeFileSync(join(context, "secret.txt"), "not for nobody\n");
    writeFileSync(join(context, "private", "inside.txt"), "hidden\n");
    chmodSync(context, 0o755);
    chmodSync(join(context, "Dockerfile"), 0o644);
    chmodSync(join(context, "readable.txt"), 0o644);
    chmodSync(join(context, "secret.txt"), 0o000);
    chmodSync(join(context, "private", "inside.txt"), 0o644);
    chmodSync(join(context, "private"), 0o000);
  });
  afterAll(() => {
    if (isRoot) tmp.remove();
  });

  it.skipIf(!isRoot)("fails the build with INVALID_ARGUMENT naming the first unreadable path", async () => {
    const outcome = await buildAsNobody(daemon, { context, dockerfile: "Dockerfile" }, out);
    expect(outcome.ok).toBe(false);
    expect(outcome.code).toBe("INVALID_ARGUMENT");
    // The walk meets the directory `private` before `secret.txt` is asked for, or the file first: either is named.
    expect(outcome.message).toMatch(/cannot read the (directory private|file secret\.txt): permission denied/);
    expect(outcome.message).toContain(context);
  });

  it.skipIf(!isRoot)("names an unreadable file alone", async () => {
    const only = join(tmp.path, "only-file");
    mkdirSync(only);
    writeFileSync(join(only, "Dockerfile"), "FROM scratch\nCOPY . /c/\n");
    writeFileSync(join(only, "secret.txt"), "x");
    chmodSync(only, 0o755);
    chmodSync(join(only, "Dockerfile"), 0o644);
    chmodSync(join(only, "secret.txt"), 0o000);
    const outcome = await buildAsNobody(daemon, { context: only }, out);
    expect(outcome).toMatchObject({ ok: false, code: "INVALID_ARGUMENT" });
    expect(outcome.message).toMatch(/cannot read the file secret\.txt: permission denied/);
  });

  it.skipIf(!isRoot)('sends them empty with a warning each under onUnreadable: "warn", as Docker does', async () => {
    const dest = join(out, "warned.tar");
    const outcome = await buildAsNobody(daemon, { context, onUnreadable: "warn", outputs: [{ type: "tar", dest }] }, out);
    expect(outcome).toMatchObject({ ok: true });
    expect(outcome.warnings.some((w) => /cannot read the file secret\.txt \(permission denied\); it was sent empty/.test(w))).toBe(true);
    expect(outcome.warnings.some((w) => /cannot read the directory private \(permission denied\); it was sent empty/.test(w))).toBe(true);
    const files = await tarFiles(dest);
    expect(files.get("c/readable.txt")).toEqual({ type: "file", size: 6 });
    expect(files.get("c/secret.txt")).toEqual({ type: "file", size: 0 });
    expect(files.get("c/private")?.type).toBe("directory");
    expect(files.has("c/private/inside.txt")).toBe(false);
  });

  it.skipIf(!isRoot)("says that an unreadable Dockerfile cannot be read, whatever onUnreadable says", async () => {
    const locked = join(tmp.path, "locked-dockerfile");
    mkdirSync(locked);
    writeFileSync(join(locked, "Dockerfile"), "FROM scratch\n");
    chmodSync(locked, 0o755);
    chmodSync(join(locked, "Dockerfile"), 0o000);
    const outcome = await buildAsNobody(daemon, { context: locked, onUnreadable: "warn" }, out);
    expect(outcome).toMatchObject({ ok: false, code: "INVALID_ARGUMENT" });
    expect(outcome.message).toBe(`the Dockerfile ${join(locked, "Dockerfile")} cannot be read: permission denied`);
  });
});
