// Which Docker Engine pushes, saves and loads. A dockerd's BuildKit keeps
// images in that dockerd, so pushing one goes through that dockerd's Engine
// API; behind a front (unix or TCP) nothing says which dockerd it is, so the
// client must be told (`dockerEngine`) and never guesses the local one.
//
// The machine has one dockerd. To stand for "the local Docker" that a guess
// would reach, DOCKER_HOST points at a recording fake Engine (no real second
// dockerd can run here): it must never receive a request.
import { execFileSync } from "node:child_process";
import * as http from "node:http";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BuildKitNodeError, connect } from "../src/index.js";
import { type BuildKitFront, startBuildKitFront } from "../src/testing/index.js";
import { failureOf, runCollecting, tempDir } from "./support/build-helpers.js";
import { assertDaemon, BUILD_DAEMONS, DOCKER_BUILDKIT, DOCKER_SOCKET } from "./support/daemons.js";
import { BASE_IMAGE, getImageConfig, getManifest, PLAIN_REGISTRY, uniqueRepository } from "./support/registry.js";

const dir = tempDir("docker-engine");
let fakeEngine: { socket: string; requests: string[]; close(): Promise<void> };
let savedDockerHost: string | undefined;

beforeAll(async () => {
  fakeEngine = await startRecordingEngine(join(dir.path, "other-docker.sock"));
});
afterAll(async () => {
  await fakeEngine?.close();
  dir.remove();
});
beforeEach(() => {
  savedDockerHost = process.env.DOCKER_HOST;
  process.env.DOCKER_HOST = `unix://${fakeEngine.socket}`;
});
afterEach(() => {
  if (savedDockerHost === undefined) delete process.env.DOCKER_HOST;
  else process.env.DOCKER_HOST = savedDockerHost;
});

describe.each(BUILD_DAEMONS)("on %s behind a front", (daemon) => {
  let front: BuildKitFront;
  let image: { repository: string; name: string };
  beforeAll(async () => {
    assertDaemon(daemon);
    front = await startBuildKitFront({ ...daemon.backend, mtls: true });
  });
  afterAll(async () => {
    await front?.stop();
  });
  beforeEach(() => {
    const repository = uniqueRepository("bkn-engine");
    image = { repository, name: `${PLAIN_REGISTRY}/${repository}:v1` };
    // An unrelated image under the very name the build pushes to.
    docker("tag", BASE_IMAGE, image.name);
  });
  afterEach(() => {
    docker("rmi", "-f", image.name);
  });

  const build = (bk: Awaited<ReturnType<typeof connect>>, marker: string) =>
    bk.build({
      context: { files: {} },
      dockerfileContent: `FROM ${BASE_IMAGE}\nLABEL built.by=${marker}\n`,
      outputs: [{ type: "image", name: image.name, push: true, insecure: true }],
    });

  if (daemon.embeddedInDocker) {
    it("refuses to push before building when it is not told which dockerd it is, and pushes nothing", async () => {
      const unrelated = docker("image", "inspect", "--format", "{{.Id}}", image.name);
      await using bk = await connect(front.address, { tls: front.tls! });
      const { error, events } = await failureOf(build(bk, "never"));
      expect(error).toBeInstanceOf(BuildKitNodeError);
      expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
      expect((error as Error).message).toContain(front.address);
      expect((error as Error).message).toMatch(/dockerEngine/);
      expect((error as Error).message).toContain("docker://");
      expect(events).toEqual([]); // refused before anything ran
      expect(fakeEngine.requests).toEqual([]);
      expect(await manifestStatus(image.repository, "v1")).toBe(404);
      expect(docker("image", "inspect", "--format", "{{.Id}}", image.name)).toBe(unrelated);
    });

    it("pushes the image it built through the Engine it is given, never the local image of that name", async () => {
      await using bk = await connect(front.address, { tls: front.tls!, dockerEngine: `unix://${daemon.dockerEngine!}` });
      const { result } = await runCollecting(build(bk, "the-front"));
      const config = await getImageConfig(PLAIN_REGISTRY, image.repository, "v1");
      expect(config.config.Labels).toMatchObject({ "built.by": "the-front" });
      expect(result.digest).toBe((await getManifest(PLAIN_REGISTRY, image.repository, "v1")).digest);
      expect(fakeEngine.requests).toEqual([]);
    });
  } else {
    it("pushes the image BuildKit built itself, with no Docker Engine involved", async () => {
      await using bk = await connect(front.address, { tls: front.tls! });
      const { result } = await runCollecting(build(bk, "buildkitd"));
      const config = await getImageConfig(PLAIN_REGISTRY, image.repository, "v1");
      expect(config.config.Labels).toMatchObject({ "built.by": "buildkitd" });
      expect(result.digest).toBe((await getManifest(PLAIN_REGISTRY, image.repository, "v1")).digest);
      expect(fakeEngine.requests).toEqual([]);
    });

    it("loads into the Engine named by dockerEngine rather than the local one", async () => {
      const missing = join(dir.path, "no-such-docker.sock");
      await using bk = await connect(front.address, { tls: front.tls!, dockerEngine: `unix://${missing}` });
      const { error } = await failureOf(
        bk.build({ context: { files: {} }, dockerfileContent: `FROM ${BASE_IMAGE}\n`, outputs: [{ type: "docker", load: true, name: image.name }] }),
      );
      expect((error as Error).message).toContain(missing);
      expect(fakeEngine.requests).toEqual([]);
    });
  }
});

describe("on dockerd, whose docker:// address names its Engine: the dockerEngine option", () => {
  it("must be a unix socket", async () => {
    await expect(connect(DOCKER_BUILDKIT, { dockerEngine: "tcp://127.0.0.1:2375" })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      address: DOCKER_BUILDKIT,
    });
  });

  it("may not contradict a docker:// address, which names its Engine already", async () => {
    await expect(connect(DOCKER_BUILDKIT, { dockerEngine: "/run/some-other-docker.sock" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await using bk = await connect(DOCKER_BUILDKIT, { dockerEngine: `unix://${DOCKER_SOCKET}` });
    expect(bk.address).toBe(DOCKER_BUILDKIT);
  });
});

function docker(...args: string[]): string {
  return execFileSync("/usr/bin/docker", args, { encoding: "utf8", timeout: 60_000, env: { ...process.env, DOCKER_HOST: `unix://${DOCKER_SOCKET}` } }).trim();
}

async function manifestStatus(repository: string, reference: string): Promise<number> {
  const response = await fetch(`http://${PLAIN_REGISTRY}/v2/${repository}/manifests/${reference}`, { method: "HEAD" });
  return response.status;
}

/** An HTTP server on a unix socket that records every request and answers 500: a Docker Engine nobody should call. */
async function startRecordingEngine(socket: string): Promise<{ socket: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    res.writeHead(500, { "Content-Type": "application/json" }).end(JSON.stringify({ message: "not this Engine" }));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
