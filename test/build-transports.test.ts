// A build works the same over every transport: dockerd's BuildKit reached
// through a unix socket and through TCP with mutual TLS (the byte-level
// fronts from buildkit-node/testing), with the session inside Control.Session.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../src/index.js";
import { type BuildKitFront, startBuildKitFront } from "../src/testing/index.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDockerd, DOCKER_BUILDKIT } from "./support/daemons.js";
import { BASE_IMAGE, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const dir = tempDir("fronts");
let fronts: { name: string; front: BuildKitFront }[] = [];

beforeAll(async () => {
  assertDockerd();
  fronts = [
    { name: "unix", front: await startBuildKitFront({ buildkit: DOCKER_BUILDKIT, unixSocket: join(dir.path, "bk.sock") }) },
    { name: "tcp+mTLS", front: await startBuildKitFront({ buildkit: DOCKER_BUILDKIT, mtls: true }) },
  ];
});
afterAll(async () => {
  for (const { front } of fronts) await front.stop();
  dir.remove();
});

describe.each(["unix", "tcp+mTLS"])("over %s", (name) => {
  it("builds with a context, exports files, and pushes an image (dockerd recognised behind the front)", async () => {
    const { front } = fronts.find((f) => f.name === name)!;
    await using bk = await connect(front.address, front.tls ? { tls: front.tls } : {});
    const out = tempDir("front-out");
    try {
      await runCollecting(
        bk.build({
          context: { files: { "hello.txt": `over ${name}\n` } },
          dockerfileContent: "FROM scratch\nCOPY hello.txt /\n",
          outputs: [{ type: "local", dest: out.path }],
        }),
      );
      expect(readFileSync(join(out.path, "hello.txt"), "utf8")).toBe(`over ${name}\n`);
      const repository = uniqueRepository("bkn-front");
      const { result } = await runCollecting(
        bk.build({
          context: { files: {} },
          dockerfileContent: `FROM ${BASE_IMAGE}\nLABEL via=${JSON.stringify(name)}\n`,
          outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true }],
        }),
      );
      expect(result.digest).toBe((await getManifest(PLAIN_REGISTRY, repository, "v1")).digest);
    } finally {
      out.remove();
    }
  });
});
