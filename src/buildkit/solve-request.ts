import { BuildKitNodeError } from "../errors.js";
import type { BuildOptions, CacheEntry } from "./build-options.js";

export interface CacheOptionsEntry {
  type: string;
  attrs: Record<string, string>;
}

/**
 * The `dockerfile.v0` frontend's attributes for these options (everything
 * but the local context names, which the build fills in).
 */
export function frontendAttrs(options: BuildOptions, dockerfileName: string): Record<string, string> {
  const attrs: Record<string, string> = { filename: dockerfileName };
  if (options.target) attrs.target = options.target;
  for (const [key, value] of Object.entries(options.buildArgs ?? {})) attrs[`build-arg:${key}`] = value;
  for (const [key, value] of Object.entries(options.labels ?? {})) attrs[`label:${key}`] = value;
  if (options.platforms?.length) attrs.platform = options.platforms.map(checkPlatform).join(",");
  if (options.noCache === true) attrs["no-cache"] = "";
  else if (Array.isArray(options.noCache) && options.noCache.length > 0) attrs["no-cache"] = options.noCache.join(",");
  if (options.pull) attrs["image-resolve-mode"] = "pull";
  const hosts = Object.entries(options.addHosts ?? {});
  if (hosts.length > 0) attrs["add-hosts"] = hosts.map(([host, ip]) => `${host}=${ip}`).join(",");
  if (options.network && options.network !== "default") {
    if (options.network !== "none" && options.network !== "host") invalid(`network must be "default", "none" or "host", not "${options.network}"`);
    attrs["force-network-mode"] = options.network;
  }
  if (options.shmSize !== undefined) {
    if (!Number.isInteger(options.shmSize) || options.shmSize <= 0) invalid("shmSize must be a positive number of bytes");
    attrs["shm-size"] = String(options.shmSize);
  }
  const ulimits = Object.entries(options.ulimits ?? {});
  if (ulimits.length > 0) attrs.ulimit = ulimits.map(([name, { soft, hard }]) => `${name}=${soft}:${hard}`).join(",");
  const provenance = provenanceAttr(options.provenance);
  if (provenance) attrs["attest:provenance"] = provenance;
  const imports = cacheEntries(options.cacheFrom, "cacheFrom");
  if (imports.length > 0) {
    // Lets the frontend match cache while it resolves stages (as the Go client does).
    attrs["cache-imports"] = JSON.stringify(imports.map((entry) => ({ Type: entry.type, Attrs: entry.attrs })));
  }
  return attrs;
}

/** The frontend's `attest:provenance` value, as buildx sends it; undefined for none. */
function provenanceAttr(provenance: BuildOptions["provenance"]): string | undefined {
  if (provenance === undefined || provenance === false) return undefined;
  const mode = provenance === true ? "min" : provenance.mode;
  if (mode !== "min" && mode !== "max") invalid(`provenance mode must be "min" or "max", not ${JSON.stringify(mode)}`);
  return `type=provenance,mode=${mode}`;
}

/** `entitlements` the solve must ask for. */
export function entitlements(options: BuildOptions): string[] {
  return options.network === "host" ? ["network.host"] : [];
}

/** Parses `cacheFrom` / `cacheTo` entries, objects or buildx CSV strings. */
export function cacheEntries(entries: CacheEntry[] | undefined, option: string): CacheOptionsEntry[] {
  return (entries ?? []).map((entry) => {
    const fields = typeof entry === "string" ? parseCsv(entry, option) : { ...entry };
    const { type, ...attrs } = fields;
    if (!type) invalid(`${option}: every entry needs a type, e.g. { type: "registry", ref: "…" }`);
    return { type, attrs };
  });
}

/**
 * buildx's CSV form: `key=value` fields split on commas, a field in double
 * quotes may hold commas (`"secret=a,b"`). Errors name the field's position,
 * never its text: cache specs can carry credentials.
 */
export function parseCsv(text: string, option: string): Record<string, string> {
  const fields: Record<string, string> = {};
  splitCsv(text).forEach((field, index) => {
    const eq = field.indexOf("=");
    if (eq <= 0) invalid(`${option}: field ${index + 1} is not key=value`);
    fields[field.slice(0, eq).trim()] = field.slice(eq + 1).trim();
  });
  return fields;
}

/**
 * One CSV record, as buildx reads `-o`, `--secret`, `--cache-to`: fields split
 * on commas, a field in double quotes may hold commas (`"name=a,b"`); fields
 * are trimmed, empty ones dropped.
 */
export function splitCsv(text: string): string[] {
  const fields: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      if (quoted && text[i + 1] === '"') {
        field += '"'; // "" inside quotes is a quote
        i++;
      } else {
        quoted = !quoted;
      }
    } else if (c === "," && !quoted) {
      fields.push(field);
      field = "";
    } else {
      field += c;
    }
  }
  fields.push(field);
  return fields.map((f) => f.trim()).filter((f) => f !== "");
}

/** `os/arch` or `os/arch/variant`, e.g. linux/amd64 or linux/arm/v7. */
export function isPlatform(text: string): boolean {
  return /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/i.test(text);
}

function checkPlatform(platform: string): string {
  if (!isPlatform(platform)) invalid(`"${platform}" is not a platform like linux/amd64 or linux/arm/v7`);
  return platform;
}

function invalid(message: string): never {
  throw new BuildKitNodeError("INVALID_ARGUMENT", message);
}
