// How the registry client authenticates, against real registries: the set-up
// script's htpasswd registry (Basic) and a registry that wants Bearer tokens
// (distribution v2.8 with token auth, started here, verifying every token's
// signature and scopes itself; see test/support/token-registry.ts). Failures
// are typed and never carry a password or a token.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

// Debug logging on before the modules create their loggers: every line is kept
// to check that no secret reaches one.
process.env.DEBUG = "buildkit-node*";
const logged: string[] = [];
const stderrWrite = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
  logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
  return true;
});

const { RegistryClient } = await import("../src/registry/registry-client.js");
const { RegistryError } = await import("../src/registry/errors.js");
const { startTokenRegistry } = await import("./support/token-registry.js");
const { startRecordingFront } = await import("./support/recording-front.js");
const { AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PLAIN_REGISTRY, uniqueRepository } = await import("./support/registry.js");
type TokenRegistry = import("./support/token-registry.js").TokenRegistry;

const ALICE_PASSWORD = "alice-password-s3cr3t";
const READER_PASSWORD = "reader-password-s3cr3t";
const ALICE_REFRESH_TOKEN = "alice-refresh-token-s3cr3t";
const secrets = [ALICE_PASSWORD, READER_PASSWORD, ALICE_REFRESH_TOKEN, AUTH_PASSWORD, "wrong-password-s3cr3t"];

const BUSYBOX = `${PLAIN_REGISTRY}/busybox:latest`;

let registry: TokenRegistry;

beforeAll(async () => {
  registry = await startTokenRegistry({
    users: {
      alice: { password: ALICE_PASSWORD, refreshToken: ALICE_REFRESH_TOKEN, access: () => ["pull", "push"] },
      reader: { password: READER_PASSWORD, access: () => ["pull"] },
    },
    anonymous: (repository) => (repository.startsWith("public/") ? ["pull"] : []),
  });
});

afterAll(async () => {
  await registry?.close();
  stderrWrite.mockRestore();
  const all = logged.join("");
  for (const secret of secrets) expect(all).not.toContain(secret);
  // The tokens themselves (JWTs) never reach a log line either.
  expect(all).not.toMatch(/eyJ[\w-]+\.eyJ/);
});

function client(credentials: Record<string, { username?: string; password?: string; identityToken?: string }>) {
  return new RegistryClient({ auth: credentials });
}

async function failure(promise: Promise<unknown>): Promise<InstanceType<typeof RegistryError>> {
  const error = await promise.then(
    () => new Error("it succeeded"),
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(RegistryError);
  for (const secret of secrets) expect(String((error as Error).message)).not.toContain(secret);
  return error as InstanceType<typeof RegistryError>;
}

describe("Bearer tokens (a registry with token auth)", () => {
  it("fetches a token for exactly the scopes a push needs, then reuses it", async () => {
    const alice = client({ [registry.host]: { username: "alice", password: ALICE_PASSWORD } });
    const repository = uniqueRepository("alice/app");
    const target = `${registry.host}/${repository}:v1`;
    const before = registry.tokenRequests.length;
    const copied = await alice.copyImage(BUSYBOX, target);
    expect(copied.blobs.copied).toBe(2);

    const asked = registry.tokenRequests.slice(before);
    expect(asked.every((r) => r.account === "alice" && r.grant === "basic")).toBe(true);
    expect(asked.map((r) => r.scopes)).toContainEqual([`repository:${repository}:pull,push`]);
    // The registry was asked once per scope set, not once per request.
    const pushTokens = asked.filter((r) => r.scopes.join(" ") === `repository:${repository}:pull,push`);
    expect(pushTokens).toHaveLength(1);

    const manifest = await alice.getManifest(target);
    expect(manifest.descriptor.digest).toBe(copied.descriptor.digest);
    const again = registry.tokenRequests.length;
    await alice.getManifest(target);
    await alice.headManifest(target);
    expect(registry.tokenRequests.length).toBe(again);
  });

  it("mounts across repositories with a token that may pull the source, sending no blob bytes", async () => {
    const alice = client({ [registry.host]: { username: "alice", password: ALICE_PASSWORD } });
    const source = `${registry.host}/${uniqueRepository("alice/source")}:v1`;
    await alice.copyImage(BUSYBOX, source);

    const front = await startRecordingFront(registry.host);
    try {
      // Through the front, so that what moved can be seen; the registry behind it checks the tokens.
      const viaFront = client({ [front.host]: { username: "alice", password: ALICE_PASSWORD } });
      const sourceRepo = source.slice(registry.host.length + 1).split(":")[0]!;
      const targetRepo = uniqueRepository("alice/target");
      const before = registry.tokenRequests.length;
      const copied = await viaFront.copyImage(`${front.host}/${sourceRepo}:v1`, `${front.host}/${targetRepo}:v1`);
      expect(copied.blobs).toEqual({ copied: 0, mounted: 2, existed: 0 });
      expect(front.blobTraffic().filter((t) => t !== "HEAD blob")).toEqual(["POST mount", "POST mount"]);
      expect(front.seen.some((r) => r.method === "PATCH" || (r.method === "PUT" && r.path.includes("/blobs/")))).toBe(false);
      // The mount's token carries pull on the source repository beside push on the target.
      const mountScopes = registry.tokenRequests.slice(before).map((r) => [...r.scopes].sort().join(" "));
      expect(mountScopes).toContain([`repository:${sourceRepo}:pull`, `repository:${targetRepo}:pull,push`].sort().join(" "));
    } finally {
      await front.close();
    }
  });

  it("lets anyone pull what anonymous access allows, with an anonymous token", async () => {
    const alice = client({ [registry.host]: { username: "alice", password: ALICE_PASSWORD } });
    const repository = uniqueRepository("public/app");
    await alice.copyImage(BUSYBOX, `${registry.host}/${repository}:v1`);
    const before = registry.tokenRequests.length;
    const anonymous = client({});
    const manifest = await anonymous.getManifest(`${registry.host}/${repository}:v1`);
    expect(manifest.kind).toBe("image");
    expect(registry.tokenRequests.slice(before).map((r) => r.grant)).toEqual(["anonymous"]);
  });

  it("signs in with an identity token through the OAuth2 refresh-token form", async () => {
    const viaRefresh = client({ [registry.host]: { identityToken: ALICE_REFRESH_TOKEN } });
    const repository = uniqueRepository("alice/refresh");
    const before = registry.tokenRequests.length;
    await viaRefresh.copyImage(BUSYBOX, `${registry.host}/${repository}:v1`);
    const asked = registry.tokenRequests.slice(before);
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((r) => r.method === "POST" && r.grant === "refresh_token" && r.account === "alice")).toBe(true);
  });

  it("PERMISSION_DENIED when the credentials are good but may not push", async () => {
    const reader = client({ [registry.host]: { username: "reader", password: READER_PASSWORD } });
    const error = await failure(reader.copyImage(BUSYBOX, `${registry.host}/${uniqueRepository("alice/denied")}:v1`));
    expect(error.code).toBe("PERMISSION_DENIED");
    expect(error.status).toBe(401);
    expect(error.host).toBe(registry.host);
    expect(error.message).toContain(`the credentials for ${registry.host} do not allow this`);
  });

  it("UNAUTHENTICATED when the token service refuses the password", async () => {
    const wrong = client({ [registry.host]: { username: "alice", password: "wrong-password-s3cr3t" } });
    const error = await failure(wrong.getManifest(`${registry.host}/alice/anything:v1`));
    expect(error.code).toBe("UNAUTHENTICATED");
    expect(error.message).toContain("the token service refused the credentials configured for");
  });

  it("UNAUTHENTICATED, naming the host, when no credentials are configured for a private repository", async () => {
    const error = await failure(client({}).getManifest(`${registry.host}/alice/private:v1`));
    expect(error.code).toBe("UNAUTHENTICATED");
    expect(error.message).toContain(`no credentials are configured for ${registry.host}`);
  });
});

describe("Basic (the set-up script's htpasswd registry)", () => {
  it("pushes and reads with the configured user", async () => {
    const basic = client({ [AUTH_REGISTRY]: { username: AUTH_USER, password: AUTH_PASSWORD } });
    const target = `${AUTH_REGISTRY}/${uniqueRepository("basic")}:v1`;
    const copied = await basic.copyImage(BUSYBOX, target);
    expect((await basic.headManifest(target))?.digest).toBe(copied.descriptor.digest);
  });

  it("UNAUTHENTICATED without credentials, naming the host", async () => {
    const error = await failure(client({}).getManifest(`${AUTH_REGISTRY}/busybox:latest`));
    expect(error.code).toBe("UNAUTHENTICATED");
    expect(error.message).toContain(`none are configured for ${AUTH_REGISTRY}`);
  });

  it("UNAUTHENTICATED for a wrong password, which no message repeats", async () => {
    const error = await failure(client({ [AUTH_REGISTRY]: { username: AUTH_USER, password: "wrong-password-s3cr3t" } }).getManifest(`${AUTH_REGISTRY}/busybox:latest`));
    expect(error.code).toBe("UNAUTHENTICATED");
    expect(error.status).toBe(401);
    expect(error.message).toContain(`the registry refused the credentials configured for ${AUTH_REGISTRY}`);
  });

  it("never sends a registry's credentials to another host an upload's Location names", async () => {
    const registryFront = await startRecordingFront(AUTH_REGISTRY);
    const storage = await startRecordingFront(AUTH_REGISTRY);
    registryFront.locationHost = storage.host;
    try {
      const basic = client({ [registryFront.host]: { username: AUTH_USER, password: AUTH_PASSWORD } });
      const bytes = Buffer.from("a blob bound for another host");
      const digest = `sha256:${(await import("node:crypto")).createHash("sha256").update(bytes).digest("hex")}`;
      const error = await failure(basic.pushBlob(`${registryFront.host}/${uniqueRepository("elsewhere")}`, { mediaType: "application/octet-stream", digest, size: bytes.length }, bytes));
      // The other host got the upload without the registry's Authorization (and refused it, being the same registry).
      expect(registryFront.seen.filter((r) => r.method === "POST").every((r) => r.authorized)).toBe(true);
      expect(storage.seen.filter((r) => r.method === "PUT").map((r) => r.authorized)).toEqual([false]);
      expect(error.code).toBe("UNAUTHENTICATED");
    } finally {
      await registryFront.close();
      await storage.close();
    }
  });

  it("reads credentials from docker's config.json by default", async () => {
    const { mkdtemp, rm, writeFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    const { tmpdir } = await import("node:os");
    const dir = await mkdtemp(join(tmpdir(), "bkn-registry-config-"));
    try {
      const auth = Buffer.from(`${AUTH_USER}:${AUTH_PASSWORD}`).toString("base64");
      await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [`http://${AUTH_REGISTRY}/v2/`]: { auth } } }));
      const fromConfig = new RegistryClient({ authOptions: { configDir: dir } });
      expect((await fromConfig.getManifest(`${AUTH_REGISTRY}/busybox:latest`)).kind).toBe("image");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
