// The local Depot's saved-image registry also served under Depot's own name,
// registry.depot.dev (`depotRegistryPort`): what it lets through, what it
// records, and that a save made through it reads back like any other. Reached
// here at its 127.0.0.1 port (any free one); the name in /etc/hosts and
// BuildKit pushing to it are the seed flow's test (depot-seed-flow.test.ts).
// Nothing is built: the image is busybox, copied by the library's registry
// client into the real registry behind the fronts.
import { type CallOptions, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildService as CliBuildService, Command } from "../src/gen/depot/cli/v1/build_pb.js";
import { RegistryClient } from "../src/registry/registry-client.js";
import { type LocalBuildRecord, type LocalDepot, type LocalSavedImage, startLocalDepot } from "../src/testing/index.js";
import { DOCKER_BUILDKIT } from "./support/daemons.js";
import { BASE_IMAGE, getManifest, PLAIN_REGISTRY } from "./support/registry.js";

const bearer = (token: string): CallOptions => ({ headers: { Authorization: `Bearer ${token}` } });
const basic = (token: string) => ({ Authorization: `Basic ${Buffer.from(`x-token:${token}`).toString("base64")}` });

let local: LocalDepot;
let projectId: string;
/** `127.0.0.1:<port>`: where the registry.depot.dev front listens. */
let aliasAddress: string;
const told: [LocalSavedImage, LocalBuildRecord][] = [];
const cli = () => createClient(CliBuildService, createConnectTransport({ baseUrl: local.apiUrl, httpVersion: "1.1" }));

beforeAll(async () => {
  local = await startLocalDepot({ buildkit: DOCKER_BUILDKIT, depotRegistryPort: 0, onImageSaved: (image, build) => told.push([image, build]) });
  projectId = local.addProject({ name: "alias" }).projectId;
  aliasAddress = `127.0.0.1:${local.depotRegistry!.split(":")[1]}`;
});

afterAll(async () => {
  await local?.stop();
});

describe("the saved-image registry as registry.depot.dev (depotRegistryPort)", () => {
  it("names itself registry.depot.dev, with its port when it is not 80 or 443", () => {
    expect(local.depotRegistry).toMatch(/^registry\.depot\.dev:\d+$/);
    expect(aliasAddress).not.toBe(local.savedImageRegistry);
  });

  it("takes a save under the build token, records it as registry.depot.dev/<project>:<build id>, and GetPullInfo reads it through the usual front", async () => {
    // A build picked up by id: the CLI saves it with `x-token:<build token>` whatever CreateBuild said.
    const build = await cli().createBuild({ projectId, options: [{ command: Command.BUILD, save: true }] }, bearer(local.token));
    const client = new RegistryClient({ auth: { [aliasAddress]: { username: "x-token", password: build.buildToken } } });
    const copied = await client.copyImage(BASE_IMAGE, `${aliasAddress}/${projectId}:${build.buildId}`);

    const record = local.builds.get(build.buildId)!;
    const reference = `${local.depotRegistry}/${projectId}:${build.buildId}`;
    expect(record.saves.map((s) => [s.reference, s.digest])).toEqual([[reference, copied.descriptor.digest]]);
    expect(told).toEqual([[record.saves[0], record]]);
    // In the real registry behind both fronts, under the project.
    expect((await getManifest(PLAIN_REGISTRY, projectId, build.buildId)).digest).toBe(copied.descriptor.digest);

    const info = await cli().getPullInfo({ buildId: build.buildId }, bearer(build.buildToken));
    expect(info.reference).toBe(`${local.savedImageRegistry}/${projectId}:${build.buildId}`);
    const read = await fetch(`http://${local.savedImageRegistry}/v2/${projectId}/manifests/${build.buildId}`, {
      method: "HEAD",
      headers: { ...basic(info.password), Accept: "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json" },
    });
    expect(read.status).toBe(200);
    expect(read.headers.get("docker-content-digest")).toBe(copied.descriptor.digest);
    expect(record.pulls.map((p) => [p.reference, p.by])).toEqual([[info.reference, "pull token"]]);
  });

  it("refuses what the usual front refuses: no token, another project's repository, a pull token writing", async () => {
    const build = await cli().createBuild({ projectId, options: [{ command: Command.BUILD, save: true }] }, bearer(local.token));
    const upload = (token: string, repository = projectId) =>
      fetch(`http://${aliasAddress}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: basic(token) });
    const anonymous = await fetch(`http://${aliasAddress}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Basic realm=/);
    expect((await upload(build.buildToken, "prj_someone_else")).status).toBe(403);
    const { token: pullToken } = await cli().getPullToken({ buildId: build.buildId }, bearer(build.buildToken));
    expect((await upload(pullToken)).status).toBe(403);
    expect((await upload(build.buildToken)).status).toBe(202); // reached the real registry
  });

  it("answers a reference with a malformed %-escape (it names no repository object) and goes on serving", async () => {
    const build = await cli().createBuild({ projectId, options: [{ command: Command.BUILD, save: true }] }, bearer(local.token));
    const malformed = await fetch(`http://${aliasAddress}/v2/${projectId}/manifests/%E0%A4%A`, { headers: basic(build.buildToken) });
    expect(malformed.status).toBe(403);
    expect((await fetch(`http://${aliasAddress}/v2/`, { headers: basic(build.buildToken) })).status).toBe(200);
  });
});

describe("depotRegistryPort, refused", () => {
  it("without a saved-image registry (INVALID_ARGUMENT)", async () => {
    await expect(startLocalDepot({ buildkit: DOCKER_BUILDKIT, savedImageRegistry: false, depotRegistryPort: 0 })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringMatching(/needs a saved-image registry/),
    });
    await expect(startLocalDepot({ buildkit: DOCKER_BUILDKIT, depotRegistryPort: 70_000 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("on a port already taken: a typed error that says so (the API's own --port too)", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as net.AddressInfo;
    try {
      await expect(startLocalDepot({ buildkit: DOCKER_BUILDKIT, depotRegistryPort: port })).rejects.toMatchObject({
        name: "BuildKitNodeError",
        code: "ALREADY_EXISTS",
        message: `a registry front cannot listen on 127.0.0.1:${port}: the port is in use`,
      });
      await expect(startLocalDepot({ buildkit: DOCKER_BUILDKIT, port })).rejects.toMatchObject({
        name: "BuildKitNodeError",
        code: "ALREADY_EXISTS",
        message: `the local Depot API cannot listen on 127.0.0.1:${port}: the port is in use`,
      });
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
