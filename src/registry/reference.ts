import { BuildKitNodeError } from "../errors.js";
import { dockerHubApiHost, dockerHubDomain } from "../session/registry-host.js";

/**
 * An image reference read the way Docker reads one (distribution/reference's
 * `ParseNormalizedNamed`): `alpine` is `docker.io/library/alpine:latest`.
 */
export interface ImageReference {
  /** The registry as Docker names it: `docker.io` for Docker Hub, else as written (`ghcr.io`, `127.0.0.1:5000`). */
  readonly domain: string;
  /** Where the registry's API answers: `registry-1.docker.io` for Docker Hub, else the domain. */
  readonly host: string;
  /** The repository: `library/alpine` on Docker Hub, `acme/app`. */
  readonly repository: string;
  /** The tag as written, if any. */
  readonly tag?: string;
  /** The digest as written, if any (`sha256:…`). */
  readonly digest?: string;
  /** What the registry API addresses the manifest by: the digest, else the tag, else `latest`. */
  readonly reference: string;
}

const defaultTag = "latest";
const officialPrefix = "library/";
/** distribution/reference's limit on the repository path. */
const maxRepositoryLength = 255;

// The grammar of distribution/reference (regexp.go), restated.
const pathComponent = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const repositoryPattern = new RegExp(`^${pathComponent}(?:/${pathComponent})*$`);
const domainComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainPattern = new RegExp(`^(?:${domainComponent}(?:\\.${domainComponent})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const tagPattern = /^\w[\w.-]{0,127}$/;
const digestPattern = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
/** An image id without its algorithm: Docker refuses it as a name. */
const identifierPattern = /^[a-f0-9]{64}$/;
/** The digest algorithms registries accept, with their hex lengths (go-digest). */
const digestLengths: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/**
 * Reads an image reference as Docker does: `alpine`, `library/alpine`,
 * `docker.io/alpine` and `index.docker.io/library/alpine` are all Docker
 * Hub's `library/alpine` (API host `registry-1.docker.io`);
 * `localhost:5000/a`, `127.0.0.1:5000/a:tag@sha256:…` name their registry.
 * The first path element is a registry when it holds a `.` or a `:`, is
 * `localhost`, or has upper-case letters. Throws INVALID_ARGUMENT, naming the
 * reference, for anything Docker would refuse (upper-case repositories,
 * malformed tags or digests, a bare 64-hex image id).
 */
export function parseImageReference(text: string): ImageReference {
  const invalid = (why: string) => new BuildKitNodeError("INVALID_ARGUMENT", `invalid image reference ${JSON.stringify(text)}: ${why}`);
  if (typeof text !== "string") throw new BuildKitNodeError("INVALID_ARGUMENT", `an image reference must be a string, not ${text === null ? "null" : typeof text}`);
  if (text === "") throw invalid("it is empty");
  if (identifierPattern.test(text)) throw invalid("a 64-character hexadecimal string is an image id, not a name");

  const at = text.indexOf("@");
  const named = at >= 0 ? text.slice(0, at) : text;
  const digest = at >= 0 ? text.slice(at + 1) : undefined;
  const colon = named.lastIndexOf(":");
  const tagged = colon > named.lastIndexOf("/");
  const name = tagged ? named.slice(0, colon) : named;
  const tag = tagged ? named.slice(colon + 1) : undefined;

  const { domain, repository } = splitDomain(name);
  if (repository.toLowerCase() !== repository) throw invalid(`the repository name "${repository}" must be lowercase`);
  if (!domainPattern.test(domain)) throw invalid(`"${domain}" is not a valid registry host`);
  if (!repositoryPattern.test(repository)) throw invalid(`"${repository}" is not a valid repository name`);
  if (repository.length > maxRepositoryLength) throw invalid(`the repository name is longer than ${maxRepositoryLength} characters`);
  if (tag !== undefined && !tagPattern.test(tag)) throw invalid(`"${tag}" is not a valid tag`);
  if (digest !== undefined) checkDigest(digest, invalid);

  return {
    domain,
    host: domain === dockerHubDomain ? dockerHubApiHost : domain,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
    reference: digest ?? tag ?? defaultTag,
  };
}

/** Docker's rule for where the registry ends and the repository starts. */
function splitDomain(name: string): { domain: string; repository: string } {
  const slash = name.indexOf("/");
  if (slash < 0) return { domain: dockerHubDomain, repository: officialPrefix + name };
  const first = name.slice(0, slash);
  const rest = name.slice(slash + 1);
  const isDomain = first === "localhost" || first === "index.docker.io" || /[.:]/.test(first) || first.toLowerCase() !== first;
  const domain = !isDomain || first === "index.docker.io" ? dockerHubDomain : first;
  const repository = isDomain ? rest : name;
  return { domain, repository: domain === dockerHubDomain && !repository.includes("/") ? officialPrefix + repository : repository };
}

function checkDigest(digest: string, invalid: (why: string) => Error): void {
  if (!digestPattern.test(digest)) throw invalid(`"${digest}" is not a valid digest`);
  const [algorithm = "", hex = ""] = digest.split(":");
  const length = digestLengths[algorithm];
  if (length === undefined) throw invalid(`unsupported digest algorithm "${algorithm}"`);
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) throw invalid(`a ${algorithm} digest is ${length} lower-case hex characters`);
}

/**
 * Writes a reference back as text: `canonical` (the default) always names
 * the registry (`docker.io/library/alpine:3`); `familiar` drops Docker Hub's
 * domain and `library/` as the docker CLI shows names (`alpine:3`). A
 * reference with neither tag nor digest is written without either.
 */
export function formatImageReference(image: ImageReference, form: "canonical" | "familiar" = "canonical"): string {
  let name = `${image.domain}/${image.repository}`;
  if (form === "familiar" && image.domain === dockerHubDomain) {
    const rest = image.repository.startsWith(officialPrefix) ? image.repository.slice(officialPrefix.length) : undefined;
    name = rest !== undefined && !rest.includes("/") ? rest : image.repository;
  }
  return `${name}${image.tag !== undefined ? `:${image.tag}` : ""}${image.digest !== undefined ? `@${image.digest}` : ""}`;
}

/** The same repository, addressed by `digest` (tag dropped). */
export function withDigest(image: ImageReference, digest: string): ImageReference {
  const { tag: _tag, ...rest } = image;
  return parsedCopy({ ...rest, digest, reference: digest });
}

/** The same repository under `tag` (digest dropped). */
export function withTag(image: ImageReference, tag: string): ImageReference {
  const { digest: _digest, ...rest } = image;
  return parsedCopy({ ...rest, tag, reference: tag });
}

/** Validates a reference built from parts by formatting and reading it again. */
function parsedCopy(image: ImageReference): ImageReference {
  return parseImageReference(formatImageReference(image));
}

/** Accepts a reference as text or as parsed (checked again: a plain object may come from anywhere). */
export function toImageReference(image: string | ImageReference): ImageReference {
  if (typeof image === "object" && image !== null && typeof image.domain === "string" && typeof image.repository === "string") {
    return parsedCopy(image);
  }
  return parseImageReference(image as string);
}
