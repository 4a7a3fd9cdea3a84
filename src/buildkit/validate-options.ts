// Run-time checks of what callers pass, for plain JavaScript callers (and
// values that came from JSON): every problem is an INVALID_ARGUMENT naming
// the field, before anything is sent. Values are never quoted for fields
// that may hold secrets (secrets, registryAuth).
import { BuildKitNodeError } from "../errors.js";
import type { BuildOptions, ContextInput, Output } from "./build-options.js";

const OUTPUT_TYPES = ["image", "docker", "oci", "tar", "local"];
const NETWORKS = ["default", "none", "host"];
const UNREADABLE_MODES = ["error", "warn"];
const COMPRESSIONS = ["gzip", "identity"];
/** The longest delay a Node timer takes (about 24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest deadline a call can carry: gRPC's `grpc-timeout` header takes 8 digits. */
export const MAX_CALL_TIMEOUT_MS = 99_999_999;
/** What BuildKit's frontend attribute keys may not hold: `=` splits them, control characters break them. */
const BAD_KEY = /[=\u0000-\u001f\u007f]/;

function invalid(field: string, why: string): BuildKitNodeError {
  return new BuildKitNodeError("INVALID_ARGUMENT", `invalid option ${field}: ${why}`);
}

/** Throws INVALID_ARGUMENT naming the first field that is not what `BuildOptions` says. */
export function validateBuildOptions(options: unknown): asserts options is BuildOptions {
  if (!isObject(options)) throw new BuildKitNodeError("INVALID_ARGUMENT", `build options must be an object, not ${describe(options)}`);
  const o = options as Record<string, unknown>;
  validateContext(o.context, "context");
  optionalString(o.dockerfile, "dockerfile", { nonEmpty: true });
  optionalString(o.dockerfileContent, "dockerfileContent");
  optionalString(o.target, "target", { nonEmpty: true });
  stringMap(o.buildArgs, "buildArgs");
  stringMap(o.labels, "labels");
  optionalStringList(o.platforms, "platforms");
  if (o.noCache !== undefined && typeof o.noCache !== "boolean") optionalStringList(o.noCache, "noCache");
  optionalBoolean(o.pull, "pull");
  stringMap(o.addHosts, "addHosts");
  if (o.network !== undefined && !NETWORKS.includes(o.network as string)) throw invalid("network", `must be one of ${NETWORKS.join(", ")}`);
  if (o.shmSize !== undefined && !(Number.isSafeInteger(o.shmSize) && (o.shmSize as number) > 0)) throw invalid("shmSize", "must be a positive number of bytes");
  validateUlimits(o.ulimits);
  validateExtraContexts(o.extraContexts);
  validateCacheEntries(o.cacheFrom, "cacheFrom");
  validateCacheEntries(o.cacheTo, "cacheTo");
  validateSecretsShape(o.secrets);
  validateSsh(o.ssh);
  validateRegistryAuth(o.registryAuth);
  validateOutputs(o.outputs);
  validateTarLimits(o.tarLimits);
  validateProvenance(o.provenance);
  optionalString(o.sharedKey, "sharedKey", { nonEmpty: true });
  if (o.onUnreadable !== undefined && !UNREADABLE_MODES.includes(o.onUnreadable as string)) {
    throw invalid("onUnreadable", `must be one of ${UNREADABLE_MODES.join(", ")}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalid("signal", `must be an AbortSignal, not ${describe(o.signal)}`);
}

function validateContext(value: unknown, field: string): asserts value is ContextInput {
  const shapes = "a directory path, { tar: Readable } or { files: { path: content } }";
  if (typeof value === "string") {
    if (value === "") throw invalid(field, "the directory path is empty");
    return;
  }
  if (!isObject(value)) throw invalid(field, `must be ${shapes}, not ${describe(value)}`);
  const input = value as Record<string, unknown>;
  if ("tar" in input) {
    const tar = input.tar;
    if (!isObject(tar) || typeof (tar as AsyncIterable<unknown>)[Symbol.asyncIterator] !== "function") {
      throw invalid(`${field}.tar`, `must be a Readable stream (or an async iterable of bytes), not ${describe(tar)}`);
    }
    if ((tar as { readableEnded?: boolean; destroyed?: boolean }).readableEnded || (tar as { destroyed?: boolean }).destroyed) {
      throw invalid(`${field}.tar`, "the stream was already read to its end or destroyed");
    }
    return;
  }
  if ("files" in input) {
    const files = input.files;
    if (!isObject(files)) throw invalid(`${field}.files`, `must be an object of path → content, not ${describe(files)}`);
    for (const [path, content] of Object.entries(files)) {
      if (path === "") throw invalid(`${field}.files`, "a file path is empty");
      if (typeof content !== "string" && !(content instanceof Uint8Array)) {
        throw invalid(`${field}.files[${JSON.stringify(path)}]`, `must be a string or bytes, not ${describe(content)}`);
      }
    }
    return;
  }
  throw invalid(field, `must be ${shapes}`);
}

function validateExtraContexts(value: unknown): void {
  if (value === undefined) return;
  if (!isObject(value)) throw invalid("extraContexts", `must be an object of name → context, not ${describe(value)}`);
  for (const [name, input] of Object.entries(value)) {
    checkKey(name, "extraContexts", "a context name");
    validateContext(input, `extraContexts[${JSON.stringify(name)}]`);
  }
}

function validateUlimits(value: unknown): void {
  if (value === undefined) return;
  if (!isObject(value)) throw invalid("ulimits", `must be an object of name → { soft, hard }, not ${describe(value)}`);
  for (const [name, limit] of Object.entries(value)) {
    checkKey(name, "ulimits", "a ulimit name");
    const { soft, hard } = (isObject(limit) ? limit : {}) as { soft?: unknown; hard?: unknown };
    if (!Number.isSafeInteger(soft) || !Number.isSafeInteger(hard)) {
      throw invalid(`ulimits[${JSON.stringify(name)}]`, "must be { soft: integer, hard: integer }");
    }
  }
}

function validateCacheEntries(value: unknown, field: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw invalid(field, `must be an array, not ${describe(value)}`);
  value.forEach((entry: unknown, i) => {
    if (typeof entry === "string") return; // parsed (and checked) as CSV later
    if (!isObject(entry) || typeof (entry as { type?: unknown }).type !== "string") {
      throw invalid(`${field}[${i}]`, 'must be a CSV string or { type: "registry", … }');
    }
    // Cache attributes may carry credentials: name the key, never the value.
    for (const [key, attr] of Object.entries(entry)) {
      if (typeof attr !== "string") throw invalid(`${field}[${i}].${key}`, `must be a string, not ${describe(attr)}`);
    }
  });
}

function validateSecretsShape(value: unknown): void {
  if (value === undefined) return;
  if (!isObject(value)) throw invalid("secrets", `must be an object of id → source, not ${describe(value)}`);
  // Each source is checked by validateSecrets (files readable, variables set).
  for (const [id, source] of Object.entries(value)) {
    if (!isObject(source)) throw invalid(`secrets[${JSON.stringify(id)}]`, "must be { file } | { env } | { value }");
  }
}

function validateSsh(value: unknown): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw invalid("ssh", `must be an array, not ${describe(value)}`);
  value.forEach((entry: unknown, i) => {
    if (typeof entry === "string" && entry !== "") return;
    if (isObject(entry) && typeof (entry as { id?: unknown }).id === "string") return;
    throw invalid(`ssh[${i}]`, 'must be an id ("default") or { id, socket?, keys? }');
  });
}

function validateRegistryAuth(value: unknown): void {
  if (value === undefined || value === "docker-config" || typeof value === "function") return;
  if (!isObject(value)) throw invalid("registryAuth", '"docker-config", a function of the host, or an object of host → { username, password } | { identityToken }');
  for (const [host, credentials] of Object.entries(value)) {
    const field = `registryAuth[${JSON.stringify(host)}]`;
    if (host === "") throw invalid("registryAuth", "a registry host is empty");
    if (!isObject(credentials)) throw invalid(field, "must be { username, password } or { identityToken }");
    // Credentials: their types are named, their values never.
    for (const key of ["username", "password", "identityToken"] as const) {
      const v = (credentials as Record<string, unknown>)[key];
      if (v !== undefined && typeof v !== "string") throw invalid(`${field}.${key}`, `must be a string, not ${describe(v)}`);
    }
  }
}

function validateOutputs(value: unknown): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw invalid("outputs", `must be an array, not ${describe(value)}`);
  value.forEach((output: unknown, i) => validateOutput(output, `outputs[${i}]`));
}

function validateOutput(output: unknown, field: string): asserts output is Output {
  if (!isObject(output)) throw invalid(field, `must be an object with a type, not ${describe(output)}`);
  const o = output as Record<string, unknown>;
  if (typeof o.type !== "string" || !OUTPUT_TYPES.includes(o.type)) throw invalid(`${field}.type`, `must be one of ${OUTPUT_TYPES.join(", ")}`);
  switch (o.type) {
    case "image":
      if (typeof o.name !== "string" || o.name.split(",").every((n) => n.trim() === "")) {
        throw invalid(`${field}.name`, "an image output needs the image name (e.g. registry.example.com/app:1)");
      }
      optionalBoolean(o.push, `${field}.push`);
      optionalBoolean(o.insecure, `${field}.insecure`);
      optionalBoolean(o.pushByDigest, `${field}.pushByDigest`);
      return;
    case "docker":
    case "oci":
      optionalString(o.name, `${field}.name`, { nonEmpty: true });
      if (o.load !== undefined) {
        if (o.load !== true) throw invalid(`${field}.load`, "must be true (or leave it out and give dest)");
        if (o.dest !== undefined) throw invalid(field, "takes load or dest, not both");
        return;
      }
      validateDest(o.dest, `${field}.dest`, true);
      return;
    case "tar":
      validateDest(o.dest, `${field}.dest`, true);
      return;
    case "local":
      validateDest(o.dest, `${field}.dest`, false);
      return;
  }
}

function validateDest(dest: unknown, field: string, streamAllowed: boolean): void {
  if (typeof dest === "string" && dest !== "") return;
  if (streamAllowed && isObject(dest) && typeof (dest as { write?: unknown }).write === "function") return;
  throw invalid(field, streamAllowed ? "must be a file path or a Writable stream" : "must be a directory path");
}

function validateTarLimits(value: unknown): void {
  if (value === undefined) return;
  if (!isObject(value)) throw invalid("tarLimits", `must be an object, not ${describe(value)}`);
  for (const [key, limit] of Object.entries(value)) {
    if (!["maxBytes", "maxCompressionRatio", "maxEntries"].includes(key)) throw invalid(`tarLimits.${key}`, "is not a known limit (maxBytes, maxCompressionRatio, maxEntries)");
    if (limit !== undefined && !(typeof limit === "number" && limit > 0)) throw invalid(`tarLimits.${key}`, "must be a positive number (Infinity for no limit)");
  }
}

/** Build args, labels, hosts: string keys a frontend attribute can carry, string values. */
function stringMap(value: unknown, field: string): void {
  if (value === undefined) return;
  if (!isObject(value)) throw invalid(field, `must be an object of name → string, not ${describe(value)}`);
  for (const [key, v] of Object.entries(value)) {
    checkKey(key, field, "a name");
    if (typeof v !== "string") throw invalid(`${field}[${JSON.stringify(key)}]`, `must be a string, not ${describe(v)}`);
  }
}

function checkKey(key: string, field: string, what: string): void {
  if (key === "") throw invalid(field, `${what} is empty`);
  if (BAD_KEY.test(key)) throw invalid(`${field}[${JSON.stringify(key)}]`, `${what} may not contain "=", a newline or another control character`);
}

function optionalString(value: unknown, field: string, { nonEmpty = false } = {}): void {
  if (value === undefined) return;
  if (typeof value !== "string") throw invalid(field, `must be a string, not ${describe(value)}`);
  if (nonEmpty && value === "") throw invalid(field, "is empty");
}

function optionalStringList(value: unknown, field: string): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw invalid(field, `must be an array of strings, not ${describe(value)}`);
  value.forEach((item: unknown, i) => {
    if (typeof item !== "string" || item === "") throw invalid(`${field}[${i}]`, `must be a non-empty string, not ${describe(item)}`);
  });
}

function validateProvenance(value: unknown): void {
  if (value === undefined || typeof value === "boolean") return;
  const mode = isObject(value) ? (value as Record<string, unknown>).mode : undefined;
  if (mode !== "min" && mode !== "max") throw invalid("provenance", `must be true, false, { mode: "min" } or { mode: "max" }, not ${describe(value)}`);
}

function optionalBoolean(value: unknown, field: string): void {
  if (value !== undefined && typeof value !== "boolean") throw invalid(field, `must be true or false, not ${describe(value)}`);
}

function isObject(value: unknown): value is object {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value's kind for a message: never the value itself. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Uint8Array) return "bytes";
  const type = typeof value;
  return type === "object" ? "an object" : type === "undefined" ? "undefined" : `a ${type}`;
}

/** `connect()`'s address and options. */
export function validateConnectOptions(address: unknown, options: unknown): void {
  if (address !== undefined && typeof address !== "string") {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `connect(): the address must be a string such as "tcp://host:1234", not ${describe(address)}`);
  }
  if (options === undefined) return;
  if (!isObject(options)) throw new BuildKitNodeError("INVALID_ARGUMENT", `connect(): options must be an object, not ${describe(options)}`);
  const o = options as Record<string, unknown>;
  positiveNumber(o.connectTimeoutMs, "connectTimeoutMs");
  if (o.keepalive !== undefined) {
    if (!isObject(o.keepalive)) throw invalid("keepalive", `must be { intervalMs, timeoutMs }, not ${describe(o.keepalive)}`);
    const keepalive = o.keepalive as Record<string, unknown>;
    positiveNumber(keepalive.intervalMs, "keepalive.intervalMs");
    positiveNumber(keepalive.timeoutMs, "keepalive.timeoutMs");
  }
  if (o.tls !== undefined && !isObject(o.tls)) throw invalid("tls", `must be { ca, cert, key, serverName }, not ${describe(o.tls)}`);
  optionalString(o.dockerEngine, "dockerEngine", { nonEmpty: true });
  if (o.compression !== undefined && !COMPRESSIONS.includes(o.compression as string)) {
    throw invalid("compression", `must be one of ${COMPRESSIONS.join(", ")}`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalid("signal", `must be an AbortSignal, not ${describe(o.signal)}`);
}

/** The `{ signal, timeoutMs }` every daemon call takes. */
export function validateCallOptions(options: unknown, method: string): void {
  if (options === undefined) return;
  if (!isObject(options)) throw new BuildKitNodeError("INVALID_ARGUMENT", `${method}(): options must be an object, not ${describe(options)}`);
  const o = options as Record<string, unknown>;
  positiveNumber(o.timeoutMs, "timeoutMs", MAX_CALL_TIMEOUT_MS);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalid("signal", `must be an AbortSignal, not ${describe(o.signal)}`);
  if (o.filter !== undefined) optionalStringList(o.filter, "filter");
}

/** A duration a timer (or a call's deadline) can take: positive, finite, at most `max`. */
function positiveNumber(value: unknown, field: string, max = MAX_TIMER_MS): void {
  if (value === undefined) return;
  if (!(typeof value === "number" && value > 0)) throw invalid(field, `must be a positive number of milliseconds, not ${describe(value)}`);
  if (!(value <= max)) throw invalid(field, `must be at most ${max} milliseconds, not ${value}`);
}
