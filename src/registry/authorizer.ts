import type { CredentialLookup } from "../session/auth.js";
import { AbortError } from "../errors.js";
import { createLogger } from "../log.js";
import { raceAbort } from "../transport/race-abort.js";
import { RegistryError } from "./errors.js";

const log = createLogger("registry");

/** How the registry wants to be authenticated, as its 401 said. */
type HostScheme = { scheme: "basic" } | { scheme: "bearer"; realm: string; service: string | undefined };

interface CachedToken {
  authorization: Promise<string>;
  /** ms since the epoch after which the token is not used again. */
  expiresAt: number;
}

/** Tokens are dropped this long before the registry says they expire. */
const expiryMarginMs = 10_000;
/** The Distribution token spec's default lifetime, when the service names none. */
const defaultTokenLifetimeS = 60;

/** A token service's answer, as the HTTP layer hands it over. */
export interface TokenResponse {
  readonly status: number;
  bytes(limit?: number): Promise<Uint8Array>;
  discard(): Promise<void>;
}

/** How the authorizer reaches a token service (the HTTP layer's deadline and errors). */
export type TokenFetch = (
  url: URL,
  init: { method: "GET" | "POST"; headers: Record<string, string>; body?: string },
  what: string,
) => Promise<TokenResponse>;

/**
 * Authenticates registry requests the way Docker does: nothing until the
 * registry answers 401, then Basic with the host's credentials, or a Bearer
 * token fetched from the realm the challenge names, for exactly the scopes
 * the request needs (`repository:acme/app:pull,push`). Tokens are cached by
 * host and scopes until shortly before they expire; one fetch at a time per
 * key. Nothing here logs or throws a credential or a token.
 */
export class RegistryAuthorizer {
  readonly #credentials: CredentialLookup;
  readonly #fetchToken: TokenFetch;
  readonly #now: () => number;
  readonly #schemes = new Map<string, HostScheme>();
  readonly #tokens = new Map<string, CachedToken>();

  constructor(credentials: CredentialLookup, fetchToken: TokenFetch, now: () => number = Date.now) {
    this.#credentials = credentials;
    this.#fetchToken = fetchToken;
    this.#now = now;
  }

  /** @internal For tests: how many tokens (or fetches under way) are held. */
  get cachedTokens(): number {
    return this.#tokens.size;
  }

  /** The Authorization header to send before any challenge, when the host's scheme is already known. */
  async authorization(host: string, scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const scheme = this.#schemes.get(host);
    if (!scheme) return undefined;
    if (scheme.scheme === "basic") return this.#basic(host, `authenticating to ${host}`);
    return this.#token(host, scheme, scopes, `authenticating to ${host}`, signal);
  }

  /**
   * Answers a 401: learns the host's scheme from `challenge` and returns the
   * header to try again with. `rejected` is the header the 401 refused, if
   * one was sent: a Basic header refused is final, a token is fetched anew.
   */
  async challenged(host: string, scopes: readonly string[], challenge: string, rejected: string | undefined, what: string, signal?: AbortSignal): Promise<string> {
    const parsed = parseChallenge(challenge);
    if (parsed?.scheme === "basic") {
      this.#schemes.set(host, { scheme: "basic" });
      if (rejected?.startsWith("Basic ")) throw unauthenticated(host, `${what}: the registry refused the credentials configured for ${host}`);
      return this.#basic(host, what);
    }
    if (parsed?.scheme === "bearer" && parsed.params.realm) {
      const scheme: HostScheme = { scheme: "bearer", realm: parsed.params.realm, service: parsed.params.service };
      this.#schemes.set(host, scheme);
      // A registry that wants more than asked for (a mount's source repository) says so in `scope`.
      const wanted = parsed.params.scope ? [...new Set([...scopes, ...parsed.params.scope.split(" ").filter(Boolean)])] : scopes;
      // The token sent (if any) was refused: fetch a new one.
      if (rejected) this.#tokens.delete(tokenKey(host, wanted));
      return this.#token(host, scheme, wanted, what, signal);
    }
    throw unauthenticated(host, `${what}: the registry asked for an authentication scheme this client does not speak`);
  }

  async #basic(host: string, what: string): Promise<string> {
    const credentials = await this.#credentials(host);
    if (credentials?.username === undefined) {
      throw unauthenticated(host, `${what}: the registry wants a user name and password and none are configured for ${host}`);
    }
    return basicAuthorization(credentials.username, credentials.password);
  }

  /** A cached or newly fetched Bearer header for the scopes. */
  #token(host: string, scheme: Extract<HostScheme, { scheme: "bearer" }>, scopes: readonly string[], what: string, signal: AbortSignal | undefined): Promise<string> {
    const key = tokenKey(host, scopes);
    const cached = this.#tokens.get(key);
    if (cached && cached.expiresAt > this.#now()) return untilAborted(cached.authorization, signal, what);
    this.#dropExpired();
    const entry: CachedToken = { authorization: Promise.resolve(""), expiresAt: Number.POSITIVE_INFINITY };
    // Shared by every request that waits for it: no one caller's signal ends it (its deadline does).
    entry.authorization = this.#requestToken(host, scheme, scopes, what).then(
      ({ token, lifetimeS }) => {
        // Not used in its last seconds (half its life, for a short-lived one): it may expire on the way.
        entry.expiresAt = this.#now() + Math.max(lifetimeS * 500, lifetimeS * 1000 - expiryMarginMs);
        return `Bearer ${token}`;
      },
      (err: unknown) => {
        if (this.#tokens.get(key) === entry) this.#tokens.delete(key);
        throw err;
      },
    );
    this.#tokens.set(key, entry);
    return untilAborted(entry.authorization, signal, what);
  }

  /** Forgets tokens past their use (a fetch under way has no expiry yet): the cache holds live ones only. */
  #dropExpired(): void {
    const now = this.#now();
    for (const [key, cached] of this.#tokens) if (cached.expiresAt <= now) this.#tokens.delete(key);
  }

  async #requestToken(
    host: string,
    scheme: Extract<HostScheme, { scheme: "bearer" }>,
    scopes: readonly string[],
    what: string,
  ): Promise<{ token: string; lifetimeS: number }> {
    const credentials = await this.#credentials(host);
    let realm: URL;
    try {
      realm = new URL(scheme.realm);
    } catch {
      throw unauthenticated(host, `${what}: the registry named a token service that is not a URL`);
    }
    let response: TokenResponse;
    if (credentials?.identityToken) {
      // An identity token is an OAuth2 refresh token: the POST form of the flow.
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: credentials.identityToken, client_id: "buildkit-node" });
      if (scheme.service) form.set("service", scheme.service);
      if (scopes.length > 0) form.set("scope", scopes.join(" "));
      response = await this.#fetchToken(realm, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: form.toString() }, what);
    } else {
      const url = new URL(realm);
      if (scheme.service) url.searchParams.set("service", scheme.service);
      for (const scope of scopes) url.searchParams.append("scope", scope);
      const headers: Record<string, string> = {};
      if (credentials?.username !== undefined) headers.Authorization = basicAuthorization(credentials.username, credentials.password);
      response = await this.#fetchToken(url, { method: "GET", headers }, what);
    }
    // The body of a refusal may echo what was sent: never read into a message.
    if (response.status === 401 || response.status === 403) {
      await response.discard();
      throw unauthenticated(host, `${what}: the token service refused ${credentials ? `the credentials configured for ${host}` : "anonymous access"} (${response.status})`, response.status);
    }
    if (response.status < 200 || response.status >= 300) {
      await response.discard();
      throw new RegistryError(response.status >= 500 ? "UNAVAILABLE" : "UNAUTHENTICATED", `${what}: the token service answered ${response.status}`, { host, status: response.status });
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(Buffer.from(await response.bytes(1024 * 1024)).toString("utf8")) as typeof body;
    } catch {
      throw unauthenticated(host, `${what}: the token service's answer is not JSON`);
    }
    const token = typeof body.token === "string" && body.token ? body.token : typeof body.access_token === "string" ? body.access_token : "";
    if (!token) throw unauthenticated(host, `${what}: the token service gave no token`);
    const lifetimeS = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : defaultTokenLifetimeS;
    log(`token for ${host} (${scopes.join(" ")}), ${lifetimeS}s`);
    return { token, lifetimeS };
  }
}

/** Waits for `promise` unless `signal` aborts first (the promise runs on for others). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  return signal ? raceAbort(promise, signal, () => new AbortError(`${what} was aborted`, { cause: signal.reason })) : promise;
}

/** `Basic <base64 user:password>` (RFC 7617), for the registry or its token service. */
export function basicAuthorization(username: string, password: string | undefined): string {
  return `Basic ${Buffer.from(`${username}:${password ?? ""}`).toString("base64")}`;
}

function tokenKey(host: string, scopes: readonly string[]): string {
  return `${host} ${[...scopes].sort().join(" ")}`;
}

function unauthenticated(host: string, message: string, status?: number): RegistryError {
  return new RegistryError("UNAUTHENTICATED", message, { host, ...(status !== undefined ? { status } : {}) });
}

/**
 * `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull"`
 * → its scheme and parameters (RFC 7235 auth-params, quoted or not).
 */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } | undefined {
  const match = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const param of match[2]!.matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
    params[param[1]!.toLowerCase()] = param[2] !== undefined ? param[2].replace(/\\(.)/g, "$1") : (param[3] ?? "");
  }
  return { scheme: match[1]!.toLowerCase(), params };
}
