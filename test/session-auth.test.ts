// moby.filesync.v1.Auth served from docker's config.json and from a record,
// called the way the daemon calls it (test/support/daemon-side.ts).
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { create, type DescMessage, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

// Debug logging must be on before the modules create their loggers, so they
// are imported below, after this line; every log line is kept to check that
// no secret reaches one.
process.env.DEBUG = "buildkit-node*";
const logged: string[] = [];
const stderrWrite = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
  logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
  return true;
});

const { authAttachable, resolveCredentials } = await import("../src/session/auth.js");
const { BuildKitNodeError } = await import("../src/errors.js");
const { GrpcCode } = await import("../src/session/grpc-server.js");
const { startDaemonSide } = await import("./support/daemon-side.js");
const {
  CredentialsRequestSchema,
  CredentialsResponseSchema,
  FetchTokenRequestSchema,
  FetchTokenResponseSchema,
  GetTokenAuthorityRequestSchema,
  GetTokenAuthorityResponseSchema,
  VerifyTokenAuthorityRequestSchema,
  VerifyTokenAuthorityResponseSchema,
} = await import("../src/gen/moby/filesync/v1/auth_pb.js");
type Attachable = import("../src/session/attachable.js").Attachable;
type DaemonSide = import("./support/daemon-side.js").DaemonSide;

/** Every secret in the fixtures; none may show up in an error or a log line. */
const secrets = [
  "pw-from-auth-field-s3cr3t",
  "pw-from-username-field-s3cr3t",
  "identity-token-s3cr3t",
  "hub-password-s3cr3t",
  "stale-file-password-s3cr3t",
  "helper-password-s3cr3t",
  "helper-identity-token-s3cr3t",
  "helper-leaked-s3cr3t",
  "helper-garbage-s3cr3t",
  "malformed-config-s3cr3t",
  "record-password-s3cr3t",
];

const basic = (user: string, password: string) => Buffer.from(`${user}:${password}`).toString("base64");

let root: string;
let helperLog: string;
/** auths in every form, plus credHelpers for some hosts. */
let helpersConfigDir: string;
/** credsStore for every host. */
let storeConfigDir: string;
const originalPath = process.env.PATH;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "bkn-auth-"));
  helperLog = join(root, "helper.log");
  const bin = join(root, "bin");
  helpersConfigDir = join(root, "helpers");
  storeConfigDir = join(root, "store");
  await Promise.all([bin, helpersConfigDir, storeConfigDir].map((dir) => mkdir(dir)));

  // A stand-in for a real credential helper (docker-credential-desktop,
  // -pass, -osxkeychain, …), which cannot run here: the same protocol —
  // `get`, the server URL on stdin, JSON {ServerURL, Username, Secret} on
  // stdout, "credentials not found in native keychain" with exit 1 — from
  // fixed answers. It logs which helper was asked for which server (never a
  // secret) so the tests can count calls.
  const helper = join(bin, "docker-credential-test");
  await writeFile(
    helper,
    `#!/bin/sh
name=$(basename "$0")
server=$(cat)
echo "$name $1 $server" >> '${helperLog}'
answer() { printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\\n' "$server" "$1" "$2"; }
case "$server" in
  helper.example.com) answer helper-user helper-password-s3cr3t ;;
  token.helper.example.com) answer '<token>' helper-identity-token-s3cr3t ;;
  store.example.com|https://index.docker.io/v1/) answer "user-of-$name" helper-password-s3cr3t ;;
  broken.example.com) echo "cannot unlock the keyring holding helper-leaked-s3cr3t"; echo "helper-leaked-s3cr3t" >&2; exit 3 ;;
  garbage.example.com) echo "not json helper-garbage-s3cr3t" ;;
  slow.example.com) exec sleep 30 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`,
  );
  await chmod(helper, 0o755);
  await symlink(helper, join(bin, "docker-credential-teststore"));
  process.env.PATH = `${bin}:${originalPath}`;

  await writeFile(
    join(helpersConfigDir, "config.json"),
    JSON.stringify({
      auths: {
        "127.0.0.1:5001": { auth: basic("alice", "pw-from-auth-field-s3cr3t") },
        "https://registry.example.com/v1/": { username: "bob", password: "pw-from-username-field-s3cr3t" },
        "token.example.com": { identitytoken: "identity-token-s3cr3t" },
        "https://index.docker.io/v1/": { auth: basic("hubuser", "hub-password-s3cr3t") },
        // A helper is configured for this host, so docker ignores this entry.
        "helper.example.com": { auth: basic("stale", "stale-file-password-s3cr3t") },
      },
      credHelpers: Object.fromEntries(
        ["helper.example.com", "token.helper.example.com", "broken.example.com", "garbage.example.com", "slow.example.com", "nothing.example.com"].map(
          (host) => [host, "test"],
        ),
      ),
    }),
  );
  await writeFile(
    join(storeConfigDir, "config.json"),
    JSON.stringify({ auths: { "https://index.docker.io/v1/": {}, "store.example.com": {} }, credsStore: "teststore" }),
  );
});

let daemon: DaemonSide | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

afterAll(async () => {
  process.env.PATH = originalPath;
  stderrWrite.mockRestore();
  await rm(root, { recursive: true, force: true });
  // The logs were on all along and did say things; none of them a secret.
  const text = logged.join("");
  expect(text).toContain("buildkit-node:auth");
  for (const secret of secrets) expect(text).not.toContain(secret);
});

/** One unary call as the daemon makes it: status and decoded reply. */
async function callUnary<I extends DescMessage, O extends DescMessage>(
  attachable: Attachable,
  method: string,
  input: I,
  request: MessageInitShape<I>,
  output: O,
): Promise<{ code: number; message: string; reply: MessageShape<O> | undefined }> {
  daemon ??= await startDaemonSide(attachable.routes);
  const call = daemon.call(`/moby.filesync.v1.Auth/${method}`);
  call.send(toBinary(input, create(input, request)));
  call.end();
  let reply: MessageShape<O> | undefined;
  for await (const bytes of call.messages) reply = fromBinary(output, bytes);
  return { ...(await call.status), reply };
}

async function credentials(attachable: Attachable, host: string) {
  const answer = await callUnary(attachable, "Credentials", CredentialsRequestSchema, { host }, CredentialsResponseSchema);
  for (const secret of secrets.filter((s) => s.includes("leaked") || s.includes("garbage") || s.includes("malformed"))) {
    expect(answer.message).not.toContain(secret);
  }
  return answer;
}

async function helperCalls(): Promise<string[]> {
  return (await readFile(helperLog, "utf8").catch(() => "")).split("\n").filter(Boolean);
}

function expectNoSecretIn(err: unknown) {
  const text = `${String(err)}\n${inspect(err, { depth: 5 })}`;
  for (const secret of secrets) expect(text).not.toContain(secret);
}

describe("authAttachable with docker-config", () => {
  it("decodes an auths entry's base64 auth field", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    const { code, reply } = await credentials(auth, "127.0.0.1:5001");
    expect(code).toBe(GrpcCode.OK);
    expect(reply).toMatchObject({ username: "alice", secret: "pw-from-auth-field-s3cr3t" });
  });

  it("matches auths keys by host name, scheme and path stripped, with username/password fields", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    expect((await credentials(auth, "registry.example.com")).reply).toMatchObject({ username: "bob", secret: "pw-from-username-field-s3cr3t" });
  });

  it("sends an identity token as the secret with an empty user name", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    expect((await credentials(auth, "token.example.com")).reply).toMatchObject({ username: "", secret: "identity-token-s3cr3t" });
  });

  it("looks Docker Hub up under https://index.docker.io/v1/ for every name of it", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    expect((await credentials(auth, "registry-1.docker.io")).reply).toMatchObject({ username: "hubuser", secret: "hub-password-s3cr3t" });
    for (const host of ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"]) {
      expect(await resolveCredentials("docker-config", host, { configDir: helpersConfigDir })).toEqual({
        username: "hubuser",
        password: "hub-password-s3cr3t",
      });
    }
  });

  it("answers an unknown host with an empty response (anonymous)", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    const { code, reply } = await credentials(auth, "unknown.example.com");
    expect(code).toBe(GrpcCode.OK);
    expect(reply).toMatchObject({ username: "", secret: "" });
  });

  it("is anonymous without a config.json, and reads $DOCKER_CONFIG by default", async () => {
    const auth = authAttachable("docker-config", { configDir: join(root, "no-such-dir") });
    expect((await credentials(auth, "127.0.0.1:5001")).reply).toMatchObject({ username: "", secret: "" });
    vi.stubEnv("DOCKER_CONFIG", helpersConfigDir);
    try {
      expect(await resolveCredentials("docker-config", "127.0.0.1:5001")).toMatchObject({ username: "alice" });
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it("asks the registry's credHelpers entry over auths, once per host for the attachable's life", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    const before = (await helperCalls()).length;
    for (let i = 0; i < 3; i++) {
      expect((await credentials(auth, "helper.example.com")).reply).toMatchObject({ username: "helper-user", secret: "helper-password-s3cr3t" });
    }
    expect((await helperCalls()).slice(before)).toEqual(["docker-credential-test get helper.example.com"]);
  });

  it("reads a helper's <token> user name as an identity token", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    expect((await credentials(auth, "token.helper.example.com")).reply).toMatchObject({ username: "", secret: "helper-identity-token-s3cr3t" });
    expect(await resolveCredentials("docker-config", "token.helper.example.com", { configDir: helpersConfigDir })).toEqual({
      identityToken: "helper-identity-token-s3cr3t",
    });
  });

  it("treats a helper's 'credentials not found' as anonymous", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir });
    const { code, reply } = await credentials(auth, "nothing.example.com");
    expect(code).toBe(GrpcCode.OK);
    expect(reply).toMatchObject({ username: "", secret: "" });
  });

  it("asks credsStore for every registry, Docker Hub under its v1 URL", async () => {
    const auth = authAttachable("docker-config", { configDir: storeConfigDir });
    const before = (await helperCalls()).length;
    expect((await credentials(auth, "store.example.com")).reply).toMatchObject({ username: "user-of-docker-credential-teststore" });
    expect((await credentials(auth, "registry-1.docker.io")).reply).toMatchObject({ username: "user-of-docker-credential-teststore" });
    expect((await credentials(auth, "elsewhere.example.com")).reply).toMatchObject({ username: "", secret: "" });
    expect((await helperCalls()).slice(before)).toEqual([
      "docker-credential-teststore get store.example.com",
      "docker-credential-teststore get https://index.docker.io/v1/",
      "docker-credential-teststore get elsewhere.example.com",
    ]);
  });

  it("fails a helper that errs, hangs or babbles with a clear status and no secret in it", async () => {
    const auth = authAttachable("docker-config", { configDir: helpersConfigDir, credentialHelperTimeoutMs: 500 });
    const broken = await credentials(auth, "broken.example.com");
    expect(broken.code).toBe(GrpcCode.UNAVAILABLE);
    expect(broken.message).toMatch(/docker-credential-test get failed for broken\.example\.com \(exit 3\)/);
    const slow = await credentials(auth, "slow.example.com");
    expect(slow.code).toBe(GrpcCode.UNAVAILABLE);
    expect(slow.message).toMatch(/did not answer within 500 ms/);
    const garbage = await credentials(auth, "garbage.example.com");
    expect(garbage.message).toMatch(/malformed JSON/);

    const errors = await Promise.all(
      ["broken.example.com", "garbage.example.com"].map((host) =>
        resolveCredentials("docker-config", host, { configDir: helpersConfigDir }).then(
          () => undefined,
          (err: unknown) => err,
        ),
      ),
    );
    for (const err of errors) {
      expect(err).toBeInstanceOf(BuildKitNodeError);
      expectNoSecretIn(err);
    }
  });

  it("names a helper that is not installed", async () => {
    const dir = await mkdtemp(join(root, "missing-helper-"));
    await writeFile(join(dir, "config.json"), JSON.stringify({ credsStore: "not-installed" }));
    const err = await resolveCredentials("docker-config", "ghcr.io", { configDir: dir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/docker-credential-not-installed is not installed/) });
    const auth = authAttachable("docker-config", { configDir: dir });
    expect((await credentials(auth, "ghcr.io")).code).toBe(GrpcCode.FAILED_PRECONDITION);
  });

  it("rejects a malformed config.json clearly, without quoting it", async () => {
    const dir = await mkdtemp(join(root, "malformed-"));
    await writeFile(join(dir, "config.json"), `{"auths": {"ghcr.io": {"password": "malformed-config-s3cr3t" oops`);
    const err = await resolveCredentials("docker-config", "ghcr.io", { configDir: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildKitNodeError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", message: `docker config ${join(dir, "config.json")} is not valid JSON` });
    expectNoSecretIn(err);

    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { "ghcr.io": { auth: "malformed-config-s3cr3t" } } }));
    const badAuth = await resolveCredentials("docker-config", "ghcr.io", { configDir: dir }).catch((e: unknown) => e);
    expect(badAuth).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining(`auths["ghcr.io"].auth is invalid`) });
    expectNoSecretIn(badAuth);

    const auth = authAttachable("docker-config", { configDir: dir });
    const answer = await credentials(auth, "ghcr.io");
    expect(answer.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(answer.message).not.toContain("malformed-config-s3cr3t");
  });
});

describe("authAttachable with a record", () => {
  const record = {
    "docker.io": { username: "hub-record", password: "record-password-s3cr3t" },
    "https://ghcr.io/v2/": { username: "gh-record", password: "record-password-s3cr3t" },
    "127.0.0.1:5001": { identityToken: "record-password-s3cr3t" },
  };

  it("looks hosts up the same way: normalized keys, Docker Hub by any name", async () => {
    const auth = authAttachable(record);
    expect((await credentials(auth, "registry-1.docker.io")).reply).toMatchObject({ username: "hub-record", secret: "record-password-s3cr3t" });
    expect((await credentials(auth, "ghcr.io")).reply).toMatchObject({ username: "gh-record" });
    expect((await credentials(auth, "127.0.0.1:5001")).reply).toMatchObject({ username: "", secret: "record-password-s3cr3t" });
    expect((await credentials(auth, "quay.io")).reply).toMatchObject({ username: "", secret: "" });
    expect(await resolveCredentials(record, "index.docker.io")).toEqual(record["docker.io"]);
    expect(await resolveCredentials(record, "quay.io")).toBeUndefined();
  });

  it("rejects a registryAuth that is neither a record nor docker-config", async () => {
    expect(() => authAttachable("docker" as never)).toThrow(/registryAuth must be "docker-config" or a record/);
    await expect(resolveCredentials(42 as never, "ghcr.io")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });
});

describe("the token methods", () => {
  it("answer UNIMPLEMENTED, so the daemon fetches tokens itself", async () => {
    const auth = authAttachable({});
    expect([...auth.routes.keys()].sort()).toEqual(
      ["Credentials", "FetchToken", "GetTokenAuthority", "VerifyTokenAuthority"].map((m) => `/moby.filesync.v1.Auth/${m}`),
    );
    const authority = await callUnary(auth, "GetTokenAuthority", GetTokenAuthorityRequestSchema, { host: "ghcr.io", salt: new Uint8Array([1]) }, GetTokenAuthorityResponseSchema);
    expect(authority.code).toBe(GrpcCode.UNIMPLEMENTED);
    expect(authority.reply).toBeUndefined();
    const token = await callUnary(auth, "FetchToken", FetchTokenRequestSchema, { host: "ghcr.io", scopes: ["repository:a:pull"] }, FetchTokenResponseSchema);
    expect(token.code).toBe(GrpcCode.UNIMPLEMENTED);
    const verify = await callUnary(auth, "VerifyTokenAuthority", VerifyTokenAuthorityRequestSchema, { host: "ghcr.io" }, VerifyTokenAuthorityResponseSchema);
    expect(verify.code).toBe(GrpcCode.UNIMPLEMENTED);
  });
});
