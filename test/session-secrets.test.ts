// moby.buildkit.secrets.v1.Secrets/GetSecret, called the way the daemon
// calls it (test/support/daemon-side.ts).
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";

// Loggers read DEBUG when their module loads: turn it on first, keep every
// line, and check that no secret value is among them.
process.env.DEBUG = "buildkit-node*";
const logged: string[] = [];
const stderrWrite = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
  logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
  return true;
});

const { secretsAttachable, validateSecrets } = await import("../src/session/secrets.js");
const { BuildKitNodeError } = await import("../src/errors.js");
const { GrpcCode } = await import("../src/session/grpc-server.js");
const { startDaemonSide } = await import("./support/daemon-side.js");
const { GetSecretRequestSchema, GetSecretResponseSchema } = await import("../src/gen/moby/buildkit/secrets/v1/secrets_pb.js");
type Attachable = import("../src/session/attachable.js").Attachable;
type DaemonSide = import("./support/daemon-side.js").DaemonSide;

const fileSecret = "file-secret-value-s3cr3t";
const envSecret = "env-secret-value-s3cr3t";
const valueSecret = "value-secret-s3cr3t";
const allSecrets = [fileSecret, envSecret, valueSecret];

let dir: string;
let secretFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bkn-secrets-"));
  secretFile = join(dir, "npmrc");
  await writeFile(secretFile, fileSecret);
});

// Each test sets what it needs; beforeEach restores this baseline.
beforeEach(() => {
  vi.unstubAllEnvs();
  vi.stubEnv("BKN_TEST_SECRET", envSecret);
});

let daemon: DaemonSide | undefined;
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
});

afterAll(async () => {
  vi.unstubAllEnvs();
  stderrWrite.mockRestore();
  await rm(dir, { recursive: true, force: true });
  const text = logged.join("");
  expect(text).toContain("buildkit-node:secrets");
  for (const secret of allSecrets) expect(text).not.toContain(secret);
});

async function getSecret(attachable: Attachable, id: string) {
  daemon ??= await startDaemonSide(attachable.routes);
  const call = daemon.call("/moby.buildkit.secrets.v1.Secrets/GetSecret");
  call.send(toBinary(GetSecretRequestSchema, create(GetSecretRequestSchema, { id })));
  call.end();
  let data: Uint8Array | undefined;
  for await (const bytes of call.messages) data = fromBinary(GetSecretResponseSchema, bytes).data;
  const status = await call.status;
  for (const secret of allSecrets) expect(status.message).not.toContain(secret);
  return { ...status, text: data && Buffer.from(data).toString("utf8") };
}

function expectNoSecretIn(err: unknown) {
  const text = `${String(err)}\n${inspect(err, { depth: 5 })}`;
  for (const secret of allSecrets) expect(text).not.toContain(secret);
}

describe("secretsAttachable", () => {
  it("serves a file, an environment variable and a value", async () => {
    const secrets = secretsAttachable({
      npmrc: { file: secretFile },
      token: { env: "BKN_TEST_SECRET" },
      literal: { value: valueSecret },
    });
    expect([...secrets.routes.keys()]).toEqual(["/moby.buildkit.secrets.v1.Secrets/GetSecret"]);
    expect(await getSecret(secrets, "npmrc")).toMatchObject({ code: GrpcCode.OK, text: fileSecret });
    expect(await getSecret(secrets, "token")).toMatchObject({ code: GrpcCode.OK, text: envSecret });
    expect(await getSecret(secrets, "literal")).toMatchObject({ code: GrpcCode.OK, text: valueSecret });
  });

  it("serves raw bytes unchanged", async () => {
    daemon = await startDaemonSide(secretsAttachable({ bytes: { value: new Uint8Array([0, 1, 2, 255]) } }).routes);
    const call = daemon.call("/moby.buildkit.secrets.v1.Secrets/GetSecret");
    call.send(toBinary(GetSecretRequestSchema, create(GetSecretRequestSchema, { id: "bytes" })));
    call.end();
    const replies: Uint8Array[] = [];
    for await (const bytes of call.messages) replies.push(fromBinary(GetSecretResponseSchema, bytes).data);
    expect(replies.map((r) => [...r])).toEqual([[0, 1, 2, 255]]);
  });

  it("reads files and variables when the daemon asks, not before", async () => {
    const later = join(dir, "later");
    const secrets = secretsAttachable({ later: { file: later }, env: { env: "BKN_TEST_LATER" } });
    expect((await getSecret(secrets, "later")).code).toBe(GrpcCode.NOT_FOUND);
    await writeFile(later, "written-later");
    vi.stubEnv("BKN_TEST_LATER", "set-later");
    expect((await getSecret(secrets, "later")).text).toBe("written-later");
    expect((await getSecret(secrets, "env")).text).toBe("set-later");
  });

  it("expands ~ to the home directory", async () => {
    vi.stubEnv("HOME", dir); // os.homedir() reads $HOME on POSIX
    expect(homedir()).toBe(dir);
    const secrets = secretsAttachable({ home: { file: "~/npmrc" } });
    expect((await getSecret(secrets, "home")).text).toBe(fileSecret);
    expect(() => validateSecrets({ home: { file: "~/npmrc" } })).not.toThrow();
    vi.stubEnv("HOME", join(dir, "elsewhere"));
    expect(await getSecret(secrets, "home")).toMatchObject({ code: GrpcCode.NOT_FOUND, message: expect.stringContaining(join(dir, "elsewhere", "npmrc")) });
  });

  it("answers NOT_FOUND naming the id, never the value, for unknown ids and missing sources", async () => {
    const secrets = secretsAttachable({
      gone: { file: join(dir, "missing") },
      unset: { env: "BKN_TEST_UNSET_VARIABLE" },
      npmrc: { file: secretFile },
    });
    expect(await getSecret(secrets, "nope")).toMatchObject({ code: GrpcCode.NOT_FOUND, message: 'secret "nope": no such secret in this build' });
    expect(await getSecret(secrets, "constructor")).toMatchObject({ code: GrpcCode.NOT_FOUND });
    expect(await getSecret(secrets, "gone")).toMatchObject({
      code: GrpcCode.NOT_FOUND,
      message: `secret "gone": file ${join(dir, "missing")} cannot be read (ENOENT)`,
    });
    expect(await getSecret(secrets, "unset")).toMatchObject({
      code: GrpcCode.NOT_FOUND,
      message: 'secret "unset": environment variable BKN_TEST_UNSET_VARIABLE is not set',
    });
  });
});

describe("validateSecrets", () => {
  it("accepts readable files, set variables and values", () => {
    expect(() =>
      validateSecrets({ a: { file: secretFile }, b: { env: "BKN_TEST_SECRET" }, c: { value: valueSecret }, d: { value: new Uint8Array(2) } }),
    ).not.toThrow();
  });

  it("throws INVALID_ARGUMENT naming the id and the kind of source, never the value", async () => {
    const unreadable = join(dir, "unreadable");
    await writeFile(unreadable, fileSecret);
    await chmod(unreadable, 0o000);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ gone: { file: join(dir, "missing") } }, /^secret "gone": file .*missing cannot be read \(ENOENT\)$/],
      [{ folder: { file: dir } }, /^secret "folder": file .* is a directory$/],
      [{ unset: { env: "BKN_TEST_UNSET_VARIABLE" } }, /^secret "unset": environment variable BKN_TEST_UNSET_VARIABLE is not set$/],
      [{ odd: { value: 42 } }, /^secret "odd": the source must be/],
      [{ odd: "a string" }, /^secret "odd": the source must be/],
      [{ "": { value: "x" } }, /^secret "": the id is empty$/],
    ];
    // root reads any file whatever its mode; the unreadable case only means something for other users.
    if (process.getuid?.() !== 0) cases.push([{ locked: { file: unreadable } }, /^secret "locked": file .* cannot be read \(EACCES\)$/]);
    for (const [secrets, message] of cases) {
      let thrown: unknown;
      try {
        validateSecrets(secrets as Parameters<typeof validateSecrets>[0]);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(BuildKitNodeError);
      expect(thrown).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
      expectNoSecretIn(thrown);
    }
    // A set variable's value is never quoted, even next to a failing entry.
    expect(() => validateSecrets({ ok: { env: "BKN_TEST_SECRET" }, bad: { env: "BKN_TEST_UNSET_VARIABLE" } })).toThrow(/bad/);
  });
});
