import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { BuildKitNodeError } from "../errors.js";
import type { RegistryCredentials } from "./auth.js";
import { errnoCode } from "./errno-code.js";
import { registryHost } from "./registry-host.js";

/**
 * Reads the credential settings of docker's `config.json`. Every error names
 * the file and the key at fault, never a value: the file holds passwords.
 */

/** `$DOCKER_CONFIG`, else `~/.docker`, as the docker CLI picks it. */
export function defaultDockerConfigDir(): string {
  return process.env.DOCKER_CONFIG || join(homedir(), ".docker");
}

/** The credential settings of one `config.json`, `auth` fields already decoded. */
export interface DockerConfig {
  readonly path: string;
  /** `auths` by key as written (`https://index.docker.io/v1/`, `ghcr.io`, …). */
  readonly auths: ReadonlyMap<string, RegistryCredentials>;
  /** `credHelpers`: registry key → helper suffix (`docker-credential-<suffix>`). */
  readonly credHelpers: ReadonlyMap<string, string>;
  /** `credsStore`: the helper for every registry without its own. */
  readonly credsStore: string | undefined;
}

/** Reads `<configDir>/config.json`; undefined when there is none (anonymous access). */
export async function readDockerConfig(configDir: string): Promise<DockerConfig | undefined> {
  const path = join(configDir, "config.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new BuildKitNodeError("INVALID_ARGUMENT", `cannot read docker config ${path} (${code ?? "unknown error"})`);
  }
  if (text.trim() === "") return { path, auths: new Map(), credHelpers: new Map(), credsStore: undefined };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // No `cause`, on purpose: V8's SyntaxError quotes the text around the
    // fault, and that text may be a password.
    throw new BuildKitNodeError("INVALID_ARGUMENT", `docker config ${path} is not valid JSON`);
  }
  return parseDockerConfig(path, parsed);
}

function parseDockerConfig(path: string, parsed: unknown): DockerConfig {
  const invalid = (what: string) => new BuildKitNodeError("INVALID_ARGUMENT", `docker config ${path}: ${what}`);
  if (!isRecord(parsed)) throw invalid("expected a JSON object");

  const auths = new Map<string, RegistryCredentials>();
  if (parsed.auths !== undefined && parsed.auths !== null) {
    if (!isRecord(parsed.auths)) throw invalid(`"auths" must be an object`);
    for (const [key, entry] of Object.entries(parsed.auths)) {
      if (!isRecord(entry)) throw invalid(`auths["${key}"] must be an object`);
      auths.set(key, authEntryCredentials(entry, (field) => invalid(`auths["${key}"].${field} is invalid`)));
    }
  }

  const credHelpers = new Map<string, string>();
  if (parsed.credHelpers !== undefined && parsed.credHelpers !== null) {
    if (!isRecord(parsed.credHelpers)) throw invalid(`"credHelpers" must be an object`);
    for (const [key, helper] of Object.entries(parsed.credHelpers)) {
      if (typeof helper !== "string") throw invalid(`credHelpers["${key}"] must be a string`);
      if (helper !== "") credHelpers.set(key, helper);
    }
  }

  const credsStore = parsed.credsStore;
  if (credsStore !== undefined && credsStore !== null && typeof credsStore !== "string") throw invalid(`"credsStore" must be a string`);
  return { path, auths, credHelpers, credsStore: credsStore || undefined };
}

/**
 * One `auths` entry: `auth` (base64 `user:password`, which wins over
 * `username`/`password` as in docker) and `identitytoken`.
 */
function authEntryCredentials(entry: Record<string, unknown>, invalid: (field: string) => Error): RegistryCredentials {
  const text = (field: string): string | undefined => {
    const value = entry[field];
    if (value === undefined || value === null || value === "") return undefined;
    if (typeof value !== "string") throw invalid(field);
    return value;
  };
  let username = text("username");
  let password = text("password");
  const auth = text("auth");
  if (auth !== undefined) {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(auth)) throw invalid("auth");
    const decoded = Buffer.from(auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) throw invalid("auth");
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1).replace(/^\0+|\0+$/g, "");
  }
  const identityToken = text("identitytoken");
  const credentials: RegistryCredentials = {};
  if (username !== undefined) credentials.username = username;
  if (password !== undefined) credentials.password = password;
  if (identityToken !== undefined) credentials.identityToken = identityToken;
  return credentials;
}

/**
 * The entry for `host` (normalized by registryHost): the exact key docker
 * would use first (`serverKey`), else any key naming the same host.
 */
export function findByHost<T>(entries: ReadonlyMap<string, T>, serverKey: string, host: string): T | undefined {
  const exact = entries.get(serverKey);
  if (exact !== undefined) return exact;
  for (const [key, value] of entries) if (registryHost(key) === host) return value;
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
