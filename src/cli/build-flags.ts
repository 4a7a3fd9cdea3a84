// buildx's flag syntax, translated into BuildOptions. Every mistake is a
// UsageError naming the flag.
import { statSync } from "node:fs";
import { resolve } from "node:path";
import type { Writable } from "node:stream";
import type { BuildOptions, CacheEntry, Output, SecretSource, SshSource } from "../index.js";
import { isPlatform, splitCsv } from "../buildkit/solve-request.js";
import { expandHome } from "../session/home-path.js";
import { UsageError } from "./errors.js";

const COMMAND = "build";

function usage(message: string): UsageError {
  return new UsageError(message, COMMAND);
}

/**
 * `--build-arg K=V` (or `K` alone: the value of the environment variable K,
 * skipped when it is unset) and `--label K=V` (`K` alone: an empty value).
 */
export function parseKeyValues(flag: string, values: string[], fromEnv: NodeJS.ProcessEnv | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf("=");
    const key = eq < 0 ? value : value.slice(0, eq);
    // The value may be sensitive: the message does not repeat it.
    if (key.trim() === "") throw usage(`--${flag}: an entry has an empty key; write KEY=VALUE`);
    if (eq >= 0) result[key] = value.slice(eq + 1);
    else if (!fromEnv) result[key] = "";
    else if (fromEnv[key] !== undefined) result[key] = fromEnv[key];
  }
  return result;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** A size such as `8GiB`, `500MB`, `64m` or `1048576` (bytes), as docker's flags take it. */
export function parseSize(flag: string, value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match ? SIZE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw usage(`--${flag} "${value}" is not a size like 8GiB, 500MB or 1048576`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!(bytes > 0)) throw usage(`--${flag} must be more than 0`);
  return bytes;
}

/** A positive whole number (`--max-context-entries 500000`) or ratio (`--max-compression-ratio 250`). */
export function parsePositive(flag: string, value: string): number {
  const number = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !(number > 0)) throw usage(`--${flag} "${value}" must be a positive number`);
  return number;
}

/** `--platform linux/amd64,linux/arm64` (repeatable). */
export function parsePlatforms(values: string[]): string[] {
  const platforms = values.flatMap((v) => v.split(",")).map((p) => p.trim()).filter(Boolean);
  for (const platform of platforms) {
    if (!isPlatform(platform)) throw usage(`--platform "${platform}" is not a platform like linux/amd64 or linux/arm/v7`);
  }
  return [...new Set(platforms)];
}

/**
 * `key=value` fields of a CSV record; keys are lower-cased. With `redact`
 * (cache specs may carry credentials, e.g. `secret_access_key=`), messages
 * name keys and positions, never values.
 */
function csvFields(flag: string, text: string, redact = false): Map<string, string> {
  const fields = new Map<string, string>();
  for (const [i, field] of splitCsv(text).entries()) {
    const eq = field.indexOf("=");
    if (eq <= 0) throw usage(redact ? `${flag}: field ${i + 1} is not key=value` : `${flag} "${text}": "${field}" is not key=value`);
    fields.set(field.slice(0, eq).trim().toLowerCase(), field.slice(eq + 1).trim());
  }
  return fields;
}

/**
 * `--provenance` as buildx reads it: `true`/`false` (or 1/0), or CSV fields
 * such as `mode=max` (`type=provenance` may be repeated; `disabled=true`
 * turns it off).
 */
export function parseProvenance(value: string | undefined): BuildOptions["provenance"] {
  if (value === undefined) return undefined;
  const flag = "--provenance";
  if (/^(true|1|false|0)$/i.test(value)) return parseBool(flag, "value", value);
  const fields = csvFields(flag, value);
  let mode: "min" | "max" = "min";
  for (const [key, v] of fields) {
    if (key === "type" && v === "provenance") continue;
    if (key === "disabled") {
      if (parseBool(flag, key, v)) return false;
      continue;
    }
    if (key !== "mode") throw usage(`${flag} "${value}": takes mode=min|max (or true/false), not "${key}"`);
    if (v !== "min" && v !== "max") throw usage(`${flag} "${value}": mode must be min or max`);
    mode = v;
  }
  return { mode };
}

function parseBool(flag: string, key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (v === "" || v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw usage(`${flag}: ${key}=${value} must be true or false`);
}

export interface OutputFlags {
  outputs: string[];
  tags: string[];
  push: boolean;
  load: boolean;
}

/** Where `-o …,dest=-` writes; refused when it is a terminal. */
export interface Stdout {
  stream: Writable & { isTTY?: boolean };
  /** Set once an output claims stdout: only one may. */
  claimed?: boolean;
}

/**
 * `-o/--output` (buildx syntax), `--push`, `--load` and `-t/--tag` into
 * outputs:
 * - `-o DIR` is `type=local,dest=DIR`; `-o -` is `type=tar,dest=-` (stdout);
 * - `type=local|tar,dest=…`; `type=docker|oci[,dest=…][,name=…]` (docker
 *   without dest loads the image into Docker); `type=image[,name=…][,push=true]
 *   [,registry.insecure=true]`; `type=registry` is an image with push=true;
 * - an image output without a name takes the tags;
 * - `--push`: push the image output, or add one with the tags;
 * - `--load`: load into Docker, named after the first tag;
 * - no output but tags: an image output with the tags (in the daemon's store).
 */
export function parseOutputs(flags: OutputFlags, cwd: string, stdout: Stdout): Output[] {
  const outputs: Output[] = flags.outputs.map((spec) => parseOutput(spec, flags.tags, cwd, stdout));
  const imageNames = flags.tags.join(",");
  if (flags.push) {
    const image = outputs.find((o): o is Extract<Output, { type: "image" }> => o.type === "image");
    if (image) image.push = true;
    else if (flags.tags.length === 0) throw usage("--push needs at least one -t/--tag to push to");
    else outputs.push({ type: "image", name: imageNames, push: true });
  }
  if (flags.load) outputs.push({ type: "docker", load: true, ...(flags.tags[0] ? { name: flags.tags[0] } : {}) });
  if (outputs.length === 0 && flags.tags.length > 0) outputs.push({ type: "image", name: imageNames });
  return outputs;
}

const outputKeys: Record<string, string[]> = {
  local: ["type", "dest"],
  tar: ["type", "dest"],
  docker: ["type", "dest", "name"],
  oci: ["type", "dest", "name"],
  image: ["type", "name", "push", "registry.insecure"],
  registry: ["type", "name", "push", "registry.insecure"],
};

function parseOutput(spec: string, tags: string[], cwd: string, stdout: Stdout): Output {
  const flag = "-o/--output";
  if (spec === "-") return { type: "tar", dest: claimStdout(stdout, flag) };
  if (!spec.includes("=")) return { type: "local", dest: resolve(cwd, spec) };
  const fields = csvFields(flag, spec);
  const type = fields.get("type");
  if (!type) throw usage(`${flag} "${spec}": type= is required (local, tar, docker, oci, image or registry)`);
  const allowed = outputKeys[type];
  if (!allowed) throw usage(`${flag} "${spec}": unknown type "${type}"; use local, tar, docker, oci, image or registry`);
  for (const key of fields.keys()) {
    if (!allowed.includes(key)) throw usage(`${flag} "${spec}": type=${type} takes ${allowed.filter((k) => k !== "type").join(", ")}, not "${key}"`);
  }
  const dest = fields.get("dest");
  const destination = (): string | Writable => {
    if (!dest) throw usage(`${flag} "${spec}": type=${type} needs dest=PATH (or dest=- for stdout)`);
    return dest === "-" ? claimStdout(stdout, flag) : resolve(cwd, dest);
  };
  const name = fields.get("name") || undefined;
  switch (type) {
    case "local": {
      if (!dest || dest === "-") throw usage(`${flag} "${spec}": type=local needs dest=DIRECTORY`);
      return { type: "local", dest: resolve(cwd, dest) };
    }
    case "tar":
      return { type: "tar", dest: destination() };
    case "docker":
      if (!dest) return { type: "docker", load: true, ...(name || tags[0] ? { name: name ?? tags[0] } : {}) };
      return { type: "docker", dest: destination(), ...(name || tags[0] ? { name: name ?? tags[0] } : {}) };
    case "oci":
      return { type: "oci", dest: destination(), ...(name || tags[0] ? { name: name ?? tags[0] } : {}) };
    default: {
      // image, registry
      const names = name ?? tags.join(",");
      if (!names) throw usage(`${flag} "${spec}": type=${type} needs name=IMAGE or -t/--tag`);
      const push = type === "registry" || parseBool(flag, "push", fields.get("push") ?? "false");
      const insecure = parseBool(flag, "registry.insecure", fields.get("registry.insecure") ?? "false");
      return { type: "image", name: names, ...(push ? { push } : {}), ...(insecure ? { insecure } : {}) };
    }
  }
}

function claimStdout(stdout: Stdout, flag: string): Writable {
  if (stdout.stream.isTTY) throw usage(`${flag}: refusing to write an archive to a terminal; redirect stdout or give dest=FILE`);
  if (stdout.claimed) throw usage(`${flag}: only one output can go to stdout`);
  stdout.claimed = true;
  return stdout.stream;
}

/**
 * `--cache-from` / `--cache-to`: buildx CSV strings, passed through; a bare
 * reference `REF` stands for `type=registry,ref=REF`.
 */
export function parseCacheEntries(flag: string, values: string[]): CacheEntry[] {
  return values.map((value) => {
    if (!value.includes("=")) return `type=registry,ref=${value}`;
    if (!csvFields(`--${flag}`, value, true).get("type")) throw usage(`--${flag}: type= is required, e.g. type=registry,ref=IMAGE`);
    return value;
  });
}

/**
 * `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]` (buildx syntax):
 * without src or env, the variable ID when it is set, else the file ID.
 * Files must be readable and variables set now; values are never printed.
 */
export function parseSecrets(values: string[], env: NodeJS.ProcessEnv, cwd: string): Record<string, SecretSource> {
  const secrets: Record<string, SecretSource> = {};
  for (const value of values) {
    const fields = csvFields("--secret", value);
    let type = "file";
    let id: string | undefined;
    let src: string | undefined;
    let envName: string | undefined;
    for (const [key, v] of fields) {
      if (key === "type") {
        if (v !== "file" && v !== "env") throw usage(`--secret "${value}": type must be file or env, not "${v}"`);
        type = v;
      } else if (key === "id") id = v;
      else if (key === "src" || key === "source") src = v;
      else if (key === "env") envName = v;
      else throw usage(`--secret "${value}": unknown key "${key}" (use id, src, env, type)`);
    }
    if (!id) throw usage(`--secret "${value}": id= is required`);
    if (type === "env" && envName === undefined) {
      envName = src ?? id;
      src = undefined;
    }
    if (src === undefined && envName === undefined) {
      if (env[id] !== undefined) envName = id;
      else src = id;
    }
    if (envName !== undefined) {
      if (env[envName] === undefined) throw usage(`--secret id=${id}: environment variable ${envName} is not set`);
      secrets[id] = { env: envName };
    } else {
      const path = resolve(cwd, expandHome(src!));
      let isFile = false;
      try {
        isFile = statSync(path).isFile();
      } catch (err) {
        throw usage(`--secret id=${id}: cannot read ${src} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
      }
      if (!isFile) throw usage(`--secret id=${id}: ${src} is not a file`);
      secrets[id] = { file: path };
    }
  }
  return secrets;
}

/** `--ssh default|ID[=SOCKET|KEY[,KEY…]]` (buildx syntax), key paths made absolute. */
export function parseSsh(values: string[], cwd: string): SshSource[] {
  return values.map((value) => {
    const eq = value.indexOf("=");
    const id = eq < 0 ? value : value.slice(0, eq);
    if (!/^[A-Za-z0-9._-]+$/.test(id)) throw usage(`--ssh "${value}": expected default or ID[=PATH[,PATH…]]`);
    if (eq < 0) return id;
    const paths = value.slice(eq + 1).split(",").map((p) => p.trim()).filter(Boolean);
    if (paths.length === 0) throw usage(`--ssh "${value}": no path after "="`);
    return `${id}=${paths.map((p) => resolve(cwd, expandHome(p))).join(",")}`;
  });
}

/** `--add-host HOST:IP` or `HOST=IP`. */
export function parseAddHosts(values: string[]): Record<string, string> {
  const hosts: Record<string, string> = {};
  for (const value of values) {
    const at = value.includes("=") ? value.indexOf("=") : value.indexOf(":");
    if (at <= 0 || at === value.length - 1) throw usage(`--add-host "${value}": expected HOST:IP`);
    hosts[value.slice(0, at)] = value.slice(at + 1);
  }
  return hosts;
}
