import { create } from "@bufbuild/protobuf";
import { BuildKitNodeError, type ErrorCode } from "../errors.js";
import {
  Auth,
  type CredentialsResponse,
  CredentialsRequestSchema,
  CredentialsResponseSchema,
  FetchTokenRequestSchema,
  FetchTokenResponseSchema,
  GetTokenAuthorityRequestSchema,
  GetTokenAuthorityResponseSchema,
  VerifyTokenAuthorityRequestSchema,
  VerifyTokenAuthorityResponseSchema,
} from "../gen/moby/filesync/v1/auth_pb.js";
import { createLogger } from "../log.js";
import type { Attachable } from "./attachable.js";
import { credentialsFromHelper } from "./credential-helper.js";
import { type DockerConfig, defaultDockerConfigDir, findByHost, readDockerConfig } from "./docker-config.js";
import { GrpcCode, GrpcStatusError, unary } from "./grpc-server.js";
import { credentialKey, registryHost } from "./registry-host.js";

const log = createLogger("auth");

export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** An OAuth refresh token (docker's `identitytoken`); wins over username/password. */
  identityToken?: string;
}

/**
 * Where registry credentials come from: docker's `config.json` (its
 * credential helpers, credsStore and `auths`, as the docker CLI reads them),
 * a record by registry host (`"ghcr.io"`, `"127.0.0.1:5001"`,
 * `"docker.io"`), or a function of the host (e.g. a short-lived token
 * fetched when a registry is first asked for; undefined for anonymous).
 */
export type RegistryAuth =
  | "docker-config"
  | Record<string, RegistryCredentials>
  | ((host: string) => Promise<RegistryCredentials | undefined> | RegistryCredentials | undefined);

export interface RegistryAuthOptions {
  /** The directory holding `config.json`; default `$DOCKER_CONFIG`, else `~/.docker`. */
  configDir?: string;
  /** How long a credential helper may take to answer; default 30 s. */
  credentialHelperTimeoutMs?: number;
}

const defaultHelperTimeoutMs = 30_000;

/** Credentials for one registry host, or undefined for anonymous access. */
export type CredentialLookup = (host: string) => Promise<RegistryCredentials | undefined>;

/**
 * `moby.filesync.v1.Auth`: answers the daemon's `Credentials` calls from
 * `auth`. The token methods answer UNIMPLEMENTED, so the daemon fetches
 * registry tokens itself with those credentials. Answers (helper runs
 * included) are cached per host for the attachable's life.
 */
export function authAttachable(auth: RegistryAuth, options: RegistryAuthOptions = {}): Attachable {
  const lookup = registryCredentials(auth, options);
  const service = `/${Auth.typeName}`;
  const noClientTokens = async (): Promise<never> => {
    // The daemon reads UNIMPLEMENTED as "no client-side tokens" and falls back to Credentials.
    throw new GrpcStatusError(GrpcCode.UNIMPLEMENTED, "client-side registry tokens are not supported");
  };
  return {
    routes: new Map([
      [
        `${service}/Credentials`,
        unary(CredentialsRequestSchema, CredentialsResponseSchema, async (request) => {
          const credentials = await lookup(request.host).catch((err: unknown) => {
            throw asGrpcStatus(err);
          });
          log(`credentials for ${request.host}: ${credentials ? "shared" : "none (anonymous)"}`);
          return credentialsResponse(credentials);
        }),
      ],
      [`${service}/FetchToken`, unary(FetchTokenRequestSchema, FetchTokenResponseSchema, noClientTokens)],
      [`${service}/GetTokenAuthority`, unary(GetTokenAuthorityRequestSchema, GetTokenAuthorityResponseSchema, noClientTokens)],
      [`${service}/VerifyTokenAuthority`, unary(VerifyTokenAuthorityRequestSchema, VerifyTokenAuthorityResponseSchema, noClientTokens)],
    ]),
  };
}

/**
 * Credentials for one registry host (`ghcr.io`, `https://ghcr.io/v2/`,
 * `docker.io`, …) from `auth`, or undefined for anonymous access. For the
 * Engine-API push path (`X-Registry-Auth`). Throws BuildKitNodeError for a
 * malformed `config.json` or a failing credential helper.
 */
export async function resolveCredentials(auth: RegistryAuth, host: string, options: RegistryAuthOptions = {}): Promise<RegistryCredentials | undefined> {
  return credentialLookup(auth, options)(host);
}

/**
 * A lookup of credentials by registry host from `auth`, each host's answer
 * (a credential helper's run included) kept for the lookup's life; a failed
 * lookup is tried again next time. For clients that talk to registries
 * themselves (the registry client).
 */
export function registryCredentials(auth: RegistryAuth, options: RegistryAuthOptions = {}): CredentialLookup {
  return cachedLookup(credentialLookup(auth, options));
}

function credentialLookup(auth: RegistryAuth, options: RegistryAuthOptions): CredentialLookup {
  if (auth === "docker-config") return dockerConfigLookup(options);
  if (typeof auth === "function") return async (host) => nonEmpty(await auth(registryHost(host)));
  if (typeof auth !== "object" || auth === null) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `registryAuth must be "docker-config" or a record of credentials by registry host`);
  }
  const byHost = new Map(Object.entries(auth).map(([key, credentials]) => [registryHost(key), credentials]));
  return async (host) => nonEmpty(byHost.get(registryHost(host)));
}

/**
 * Docker's order: the registry's `credHelpers` entry, else `credsStore`, else
 * `auths`. A configured helper is the only source for its registries, as in
 * the docker CLI (`auths` then holds no secret, at most a marker).
 */
function dockerConfigLookup(options: RegistryAuthOptions): CredentialLookup {
  const configDir = options.configDir ?? defaultDockerConfigDir();
  const timeoutMs = options.credentialHelperTimeoutMs ?? defaultHelperTimeoutMs;
  let config: Promise<DockerConfig | undefined> | undefined;
  return async (requestedHost) => {
    config ??= readDockerConfig(configDir);
    const loaded = await config.catch((err: unknown) => {
      config = undefined; // a fixed file is read again on the next call
      throw err;
    });
    if (!loaded) return undefined;
    const host = registryHost(requestedHost);
    // Docker Hub lives under its v1 URL in config.json and in helpers.
    const serverKey = credentialKey(host);
    const helper = findByHost(loaded.credHelpers, serverKey, host) ?? loaded.credsStore;
    if (helper) return credentialsFromHelper(helper, serverKey, timeoutMs);
    return nonEmpty(findByHost(loaded.auths, serverKey, host));
  };
}

/** One lookup per host at a time and for good; a failed lookup is retried next time. */
function cachedLookup(lookup: CredentialLookup): CredentialLookup {
  const cache = new Map<string, Promise<RegistryCredentials | undefined>>();
  return (requestedHost) => {
    const host = registryHost(requestedHost);
    let answer = cache.get(host);
    if (!answer) {
      answer = lookup(host);
      cache.set(host, answer);
      answer.catch(() => cache.delete(host));
    }
    return answer;
  };
}

function nonEmpty(credentials: RegistryCredentials | undefined): RegistryCredentials | undefined {
  if (!credentials) return undefined;
  return credentials.identityToken || credentials.username || credentials.password ? credentials : undefined;
}

/**
 * The wire answer. An identity token goes as the secret with an empty user
 * name: that is how the daemon knows to run the OAuth refresh-token flow.
 */
function credentialsResponse(credentials: RegistryCredentials | undefined): CredentialsResponse {
  if (!credentials) return create(CredentialsResponseSchema);
  if (credentials.identityToken) return create(CredentialsResponseSchema, { username: "", secret: credentials.identityToken });
  return create(CredentialsResponseSchema, { username: credentials.username ?? "", secret: credentials.password ?? "" });
}

const grpcCodes: Partial<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: GrpcCode.INVALID_ARGUMENT,
  FAILED_PRECONDITION: GrpcCode.FAILED_PRECONDITION,
  UNAVAILABLE: GrpcCode.UNAVAILABLE,
  TIMEOUT: GrpcCode.UNAVAILABLE,
};

function asGrpcStatus(err: unknown): GrpcStatusError {
  if (err instanceof BuildKitNodeError) return new GrpcStatusError(grpcCodes[err.code] ?? GrpcCode.UNKNOWN, err.message);
  return new GrpcStatusError(GrpcCode.UNKNOWN, err instanceof Error ? err.message : String(err));
}
