// A build works the same over every transport: each daemon reached through a
// unix socket and through TCP with mutual TLS (the byte-level fronts from
// buildkit-node/testing), with the session inside Control.Session.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../src/index.js";
import { type BuildKitFront, startBuildKitFront } from "../src/testing/index.js";
import { runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS } from "./support/daemons.js";
import { BASE_IMAGE, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

describe.each(BUILD_DAEMONS)("on %s", (daemon) => {
  const dir = tempDir("fronts");
  const fronts = new Map<string, BuildKitFront>();
  beforeAll(async () => {
    assertDaemon(daemon);
    fronts.set("unix", await startBuildKitFront({ ...daemon.backend, unixSocket: join(dir.path, "bk.sock") }));
    fronts.set("tcp+mTLS", await startBuildKitFront({ ...daemon.backend, mtls: true }));
  });
  afterAll(async () => {
    for (const front of fronts.values()) await front.stop();
    dir.remove();
  });

  describe.each(["unix", "tcp+mTLS"])("over %s", (name) => {
    it("builds with a context, exports files, and pushes an image", async () => {
      const front = fronts.get(name)!;
      // A dockerd's BuildKit pushes through that dockerd's Engine, which a front cannot name.
      const dockerEngine = daemon.dockerEngine ? { dockerEngine: daemon.dockerEngine } : {};
      await using bk = await connect(front.address, { ...(front.tls ? { tls: front.tls } : {}), ...dockerEngine });
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
            outputs: [{ type: "image", name: `${PLAIN_REGISTRY}/${repository}:v1`, push: true, insecure: true }],
          }),
        );
        expect(result.digest).toBe((await getManifest(PLAIN_REGISTRY, repository, "v1")).digest);
      } finally {
        out.remove();
      }
    });
  });
});
