// buildx flag syntax into BuildOptions: the command's pure translations,
// checked in-process (the end-to-end tests run the command itself).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../src/cli/args.js";
import { splitCsv } from "../src/buildkit/solve-request.js";
import { parseAddHosts, parseCacheEntries, parseKeyValues, parseOutputs, parsePlatforms, parseProvenance, parseSecrets, parseSsh } from "../src/cli/build-flags.js";
import { metadataOf } from "../src/cli/commands/build.js";
import { UsageError } from "../src/cli/errors.js";
import { formatBytes, sanitizeLine } from "../src/progress/format.js";

const cwd = "/work/dir";
const pipe = () => ({ stream: Object.assign(new PassThrough(), { isTTY: false }) });

describe("-o/--output, --push, --load, -t", () => {
  const outputs = (flags: Partial<Parameters<typeof parseOutputs>[0]>, stdout = pipe()) =>
    parseOutputs({ outputs: [], tags: [], push: false, load: false, ...flags }, cwd, stdout);

  it("reads buildx's forms", () => {
    expect(outputs({ outputs: ["out"] })).toEqual([{ type: "local", dest: "/work/dir/out" }]);
    expect(outputs({ outputs: ["type=local,dest=/abs"] })).toEqual([{ type: "local", dest: "/abs" }]);
    expect(outputs({ outputs: ["type=tar,dest=img.tar"] })).toEqual([{ type: "tar", dest: "/work/dir/img.tar" }]);
    expect(outputs({ outputs: ["type=docker"], tags: ["app:1"] })).toEqual([{ type: "docker", load: true, name: "app:1" }]);
    expect(outputs({ outputs: ["type=oci,dest=x.tar,name=app:2"], tags: ["app:1"] })).toEqual([{ type: "oci", dest: "/work/dir/x.tar", name: "app:2" }]);
    expect(outputs({ outputs: ['type=image,"name=r/a:1,r/b:1",push=true,registry.insecure=true'] })).toEqual([
      { type: "image", name: "r/a:1,r/b:1", push: true, insecure: true },
    ]);
    expect(outputs({ outputs: ["type=registry"], tags: ["r/a:1", "r/a:latest"] })).toEqual([{ type: "image", name: "r/a:1,r/a:latest", push: true }]);
  });

  it('sends "-" and dest=- to stdout, once, and never to a terminal', () => {
    const stdout = pipe();
    const [tar] = outputs({ outputs: ["-"] }, stdout);
    expect(tar).toEqual({ type: "tar", dest: stdout.stream });
    expect(() => outputs({ outputs: ["-", "type=docker,dest=-"] })).toThrow(/only one output can go to stdout/);
    const terminal = { stream: Object.assign(new PassThrough(), { isTTY: true }) };
    expect(() => outputs({ outputs: ["type=tar,dest=-"] }, terminal)).toThrow(/refusing to write an archive to a terminal/);
  });

  it("--push pushes the image output or adds one with the tags; --load loads the first tag; tags alone store an image", () => {
    expect(outputs({ push: true, tags: ["r/a:1", "r/a:2"] })).toEqual([{ type: "image", name: "r/a:1,r/a:2", push: true }]);
    expect(outputs({ push: true, outputs: ["type=image,name=r/x:1"] })).toEqual([{ type: "image", name: "r/x:1", push: true }]);
    expect(outputs({ load: true, tags: ["a:1", "a:2"] })).toEqual([{ type: "docker", load: true, name: "a:1" }]);
    expect(outputs({ tags: ["a:1"] })).toEqual([{ type: "image", name: "a:1" }]);
    expect(outputs({})).toEqual([]);
    expect(() => outputs({ push: true })).toThrow(/--push needs at least one -t\/--tag/);
  });

  it("names what is wrong", () => {
    expect(() => outputs({ outputs: ["dest=x"] })).toThrow(/type= is required/);
    expect(() => outputs({ outputs: ["type=local"] })).toThrow(/type=local needs dest=DIRECTORY/);
    expect(() => outputs({ outputs: ["type=image"] })).toThrow(/needs name=IMAGE or -t\/--tag/);
    expect(() => outputs({ outputs: ["type=image,name=a,push=maybe"] })).toThrow(/push=maybe must be true or false/);
    expect(() => outputs({ outputs: ["type=tar,dest=x,oops"] })).toThrow(/"oops" is not key=value/);
  });
});

describe("the other build flags", () => {
  it("--build-arg takes KEY alone from the environment; --label KEY alone is empty", () => {
    expect(parseKeyValues("build-arg", ["A=1", "B=x=y", "FROM_ENV", "UNSET"], { FROM_ENV: "e" })).toEqual({ A: "1", B: "x=y", FROM_ENV: "e" });
    expect(parseKeyValues("label", ["k=v", "flag"], undefined)).toEqual({ k: "v", flag: "" });
    const error = (() => {
      try {
        parseKeyValues("build-arg", ["=hunter2"], {});
      } catch (err) {
        return err as UsageError;
      }
    })();
    expect(error).toBeInstanceOf(UsageError);
    expect(error!.message).not.toContain("hunter2");
  });

  it("--platform splits commas, repeats and drops duplicates", () => {
    expect(parsePlatforms(["linux/amd64,linux/arm64", "linux/arm/v7", "linux/amd64"])).toEqual(["linux/amd64", "linux/arm64", "linux/arm/v7"]);
    expect(() => parsePlatforms(["amd64"])).toThrow(/--platform "amd64"/);
  });

  it("--cache-from/--cache-to pass CSV through, a bare reference is a registry cache, and credentials are not echoed", () => {
    expect(parseCacheEntries("cache-from", ["r/app:cache", "type=local,src=/c"])).toEqual(["type=registry,ref=r/app:cache", "type=local,src=/c"]);
    expect(() => parseCacheEntries("cache-to", ["secret_access_key=AKIASECRET,bucket=b"])).toThrow(/^--cache-to: type= is required/);
    expect(() => parseCacheEntries("cache-to", ["type=s3,secret_access_key=AKIASECRET,AKIASECRET"])).toThrow(/field 3 is not key=value/);
  });

  it("--secret reads buildx's syntax and checks sources before the build", () => {
    const dir = mkdtempSync(join(tmpdir(), "bkn-cli-secret-"));
    try {
      writeFileSync(join(dir, "npmrc"), "token");
      writeFileSync(join(dir, "plain"), "x");
      const env = { TOKEN: "t", plain: undefined };
      expect(parseSecrets(["id=npmrc,src=npmrc", "id=t,env=TOKEN", "id=TOKEN", "id=x,type=env,src=TOKEN", "id=plain"], env, dir)).toEqual({
        npmrc: { file: join(dir, "npmrc") },
        t: { env: "TOKEN" },
        TOKEN: { env: "TOKEN" },
        x: { env: "TOKEN" },
        plain: { file: join(dir, "plain") },
      });
      expect(() => parseSecrets(["src=npmrc"], env, dir)).toThrow(/id= is required/);
      expect(() => parseSecrets(["id=a,env=NOPE"], env, dir)).toThrow(/--secret id=a: environment variable NOPE is not set/);
      expect(() => parseSecrets(["id=a,src=."], env, dir)).toThrow(/--secret id=a: \. is not a file/);
      expect(() => parseSecrets(["id=a,mode=0400"], env, dir)).toThrow(/unknown key "mode"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("--ssh keeps ids and makes key paths absolute; --add-host takes HOST:IP and HOST=IP", () => {
    expect(parseSsh(["default", "github=keys/id_ed25519,/abs/key"], cwd)).toEqual(["default", "github=/work/dir/keys/id_ed25519,/abs/key"]);
    expect(() => parseSsh(["bad id"], cwd)).toThrow(/--ssh "bad id"/);
    expect(parseAddHosts(["db:10.0.0.2", "v6=::1"])).toEqual({ db: "10.0.0.2", v6: "::1" });
    expect(() => parseAddHosts(["nohost"])).toThrow(/--add-host "nohost": expected HOST:IP/);
  });

  it("--provenance takes buildx's forms: a boolean, or mode=min|max", () => {
    expect(parseProvenance(undefined)).toBeUndefined();
    expect(parseProvenance("true")).toBe(true);
    expect(parseProvenance("0")).toBe(false);
    expect(parseProvenance("mode=max")).toEqual({ mode: "max" });
    expect(parseProvenance("type=provenance,mode=min")).toEqual({ mode: "min" });
    expect(parseProvenance("mode=max,disabled=true")).toBe(false);
    expect(() => parseProvenance("mode=full")).toThrow(/--provenance "mode=full": mode must be min or max/);
    expect(() => parseProvenance("builder-id=x")).toThrow(/takes mode=min\|max/);
  });

  it("splits CSV like buildx: quoted fields keep their commas", () => {
    expect(splitCsv('type=image,"name=a,b",push=true')).toEqual(["type=image", "name=a,b", "push=true"]);
    expect(splitCsv('a="x""y"')).toEqual(['a=x"y']);
  });
});

describe("the command line", () => {
  const specs = {
    tag: { type: "string", short: "t", multiple: true, description: "" },
    push: { type: "boolean", description: "" },
    file: { type: "string", short: "f", description: "" },
  } as const;

  it("takes short, long, repeated and --flag=value forms, booleans as --flag=true|false, and - as an argument", () => {
    const args = parseCommandLine("build", ["-t", "a", "--tag=b", "-tc", "--push=false", "-f", "-", "-"], specs, 1);
    expect(args.strings("tag")).toEqual(["a", "b", "c"]);
    expect(args.boolean("push")).toBe(false);
    expect(args.string("file")).toBe("-");
    expect(args.positionals).toEqual(["-"]);
    expect(parseCommandLine("build", ["--push=true"], specs, 1).boolean("push")).toBe(true);
  });

  it("names the flag in every mistake", () => {
    expect(() => parseCommandLine("build", ["--tga", "x"], specs, 1)).toThrow("unknown flag: --tga");
    expect(() => parseCommandLine("build", ["-t"], specs, 1)).toThrow("-t/--tag needs a value");
    expect(() => parseCommandLine("build", ["-t", "--push"], specs, 1)).toThrow(/-t\/--tag needs a value; to pass one that starts with "-", write --tag=VALUE/);
    expect(() => parseCommandLine("build", ["a", "b"], specs, 1)).toThrow('too many arguments: "b"');
  });
});

describe("the metadata file", () => {
  it("decodes base64 JSON values and reports the pushed digest as containerimage.digest", () => {
    const descriptor = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: "sha256:aaa", size: 1 };
    const metadata = metadataOf({
      ref: "r1",
      digest: "sha256:pushed",
      exporterResponse: {
        "containerimage.digest": "sha256:imageid",
        "containerimage.descriptor": Buffer.from(JSON.stringify(descriptor)).toString("base64"),
        "image.name": "r/a:1",
      },
      pushed: [{ name: "r/a:1", digest: "sha256:pushed" }],
    });
    expect(metadata).toEqual({
      "containerimage.digest": "sha256:pushed",
      "containerimage.descriptor": descriptor,
      "image.name": "r/a:1",
      "buildkit-node.build.ref": "r1",
    });
  });
});

describe("progress text", () => {
  it("keeps a step's output on one clean line", () => {
    expect(sanitizeLine("a\u001b[31mred\u001b[0m\tb\u001b]0;title\u0007c\u0001d\re")).toBe("ared    bcde");
    expect(sanitizeLine("RUN <<EOF\necho hi\nEOF")).toBe("RUN <<EOF echo hi EOF");
  });

  it("prints sizes as buildx does", () => {
    expect([0, 512, 2100, 999_600, 41_900_000, 1_070_000_000].map(formatBytes)).toEqual(["0B", "512B", "2.10kB", "1.00MB", "41.9MB", "1.07GB"]);
  });
});
