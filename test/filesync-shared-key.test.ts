// What the daemon re-uses of an earlier upload, on the real daemons: the
// `sharedKey` option lets a new directory diff against an earlier one, and an
// in-memory Dockerfile is never mistaken for the last one of the same size.
import { randomBytes, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import * as fs from "node:fs/promises";
import { join } from "node:path";
import * as tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildEvent } from "../src/buildkit/events.js";
import { type BuildKitClient, BuildKitNodeError, connect } from "../src/index.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";

const FILES = 40;
const FILE_SIZE = 32 * 1024;
const DOCKERFILE = "FROM scratch\nCOPY . /c/\n";

/** Bytes the daemon counted for the context's transfer (listing included). */
function contextBytes(events: BuildEvent[]): number {
  let sent = 0;
  for (const event of events) {
    if (event.type === "progress" && event.id.startsWith("transferring context")) sent = Math.max(sent, event.current);
  }
  return sent;
}

/** The files of a tar export, by name. */
async function tarFiles(file: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tarStream.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      if (entry.header.type === "file") files.set(entry.header.name.replace(/^\.?\//, ""), Buffer.concat(chunks));
    }
  })();
  createReadStream(file).pipe(extract);
  await done;
  return files;
}

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  let bk: BuildKitClient;
  const tmp = tempDir("shared-key");
  beforeAll(async () => {
    assertDaemon(daemon);
    bk = await connect(daemon.address, daemon.connectOptions);
  });
  afterAll(async () => {
    await bk?.close();
    tmp.remove();
  });

  it("lets a second directory with the same sharedKey send only what differs from the first", async () => {
    const first = join(tmp.path, "checkout-1");
    await fs.mkdir(first);
    const time = new Date(Date.now() - 3600_000);
    for (let i = 0; i < FILES; i++) {
      const file = join(first, `f${String(i).padStart(2, "0")}.bin`);
      await fs.writeFile(file, randomBytes(FILE_SIZE));
      await fs.utimes(file, time, time);
    }
    // A second checkout of the same project: the same files and times, one file changed since.
    const second = join(tmp.path, "checkout-2");
    await fs.cp(first, second, { recursive: true, preserveTimestamps: true });
    const changed = randomBytes(FILE_SIZE);
    await fs.writeFile(join(second, "f07.bin"), changed);

    const sharedKey = `project-${randomUUID()}`;
    const build = (context: string, key: string, dest: string) =>
      runCollecting(bk.build({ context, dockerfileContent: DOCKERFILE, sharedKey: key, outputs: [{ type: "tar", dest }] }));

    const full = contextBytes((await build(first, sharedKey, join(tmp.path, "1.tar"))).events);
    expect(full).toBeGreaterThanOrEqual(FILES * FILE_SIZE);

    const diffed = contextBytes((await build(second, sharedKey, join(tmp.path, "2.tar"))).events);
    // The changed file and the listing; not the 39 others.
    expect(diffed).toBeGreaterThanOrEqual(FILE_SIZE);
    expect(diffed).toBeLessThan(4 * FILE_SIZE);
    const files = await tarFiles(join(tmp.path, "2.tar"));
    expect(files.get("c/f07.bin")?.equals(changed)).toBe(true);
    expect(files.get("c/f08.bin")?.equals(await fs.readFile(join(first, "f08.bin")))).toBe(true);
    expect(files.size).toBe(FILES);

    // Under another key (the default is one per directory) the daemon has nothing to diff against.
    const fresh = contextBytes((await build(second, `other-${randomUUID()}`, join(tmp.path, "3.tar"))).events);
    expect(fresh).toBeGreaterThanOrEqual(FILES * FILE_SIZE);
  });

  it("uses each build's own dockerfileContent, whatever the length, for one directory", async () => {
    const context = join(tmp.path, "two-files");
    await fs.mkdir(context);
    await fs.writeFile(join(context, "a"), "A\n");
    await fs.writeFile(join(context, "b"), "B\n");
    for (const name of ["a", "b"]) {
      // Same length, same directory, so the same session key: only the content differs.
      const dest = join(tmp.path, `dockerfile-${name}.tar`);
      await runCollecting(bk.build({ context, dockerfileContent: `FROM scratch\nCOPY ${name} /x\n`, outputs: [{ type: "tar", dest }] }));
      expect((await tarFiles(dest)).get("x")?.toString()).toBe(`${name.toUpperCase()}\n`);
    }
  });

  it("refuses an empty sharedKey before reading the context", () => {
    let failure: unknown;
    try {
      void bk.build({ context: join(tmp.path, "absent"), dockerfileContent: DOCKERFILE, sharedKey: "" });
    } catch (err) {
      failure = err;
    }
    expect(failure).toBeInstanceOf(BuildKitNodeError);
    expect((failure as BuildKitNodeError).code).toBe("INVALID_ARGUMENT");
    expect((failure as BuildKitNodeError).message).toMatch(/sharedKey/);
  });
});
