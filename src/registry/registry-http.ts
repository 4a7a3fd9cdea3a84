import { AbortError } from "../errors.js";
import { createLogger } from "../log.js";
import type { CredentialLookup } from "../session/auth.js";
import { parseChallenge, RegistryAuthorizer } from "./authorizer.js";
import { codeForStatus, RegistryError } from "./errors.js";

const log = createLogger("registry");

export interface RegistryHttpOptions {
  credentials: CredentialLookup;
  /** Plain HTTP for every registry (`true`) or for these hosts; loopback registries always. */
  insecure: boolean | readonly string[];
  /** How long the registry may take to answer, and to move a body's next bytes. */
  timeoutMs: number;
  userAgent: string;
}

/** One request to a registry's `/v2/` API. */
export interface RegistryRequest {
  /** The registry host (`registry-1.docker.io`, `127.0.0.1:5000`). */
  host: string;
  method: "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE";
  /** A path under the host (`/v2/…`), or an absolute URL the registry gave (an upload's Location). */
  path: string;
  /** Token scopes the request needs, e.g. `repository:acme/app:pull,push`. */
  scopes: readonly string[];
  headers?: Record<string, string>;
  /** A body in memory can be sent again after a 401; a stream cannot. */
  body?: Uint8Array | AsyncIterable<Uint8Array>;
  signal?: AbortSignal | undefined;
  /** For messages: `GET 127.0.0.1:5000/acme/app manifest v1`. Never a URL's query. */
  what: string;
  /** Statuses that are not failures besides 2xx (a HEAD's 404, say). */
  accept?: readonly number[];
}

/**
 * A response with its body still to read, and a deadline that keeps running
 * while it is read: `body()` streams it, each chunk moving the deadline on.
 */
export interface RegistryResponse {
  readonly status: number;
  readonly headers: Headers;
  /** The final URL (after redirects). */
  readonly url: string;
  /** The body as a stream of chunks, under the idle deadline; may be read once. */
  body(): AsyncIterable<Uint8Array>;
  /** The whole body, for small documents (manifests, errors). */
  bytes(limit?: number): Promise<Uint8Array>;
  /** Drops the body unread. */
  discard(): Promise<void>;
}

/** The most a manifest or an error body may take in memory. */
const documentLimit = 4 * 1024 * 1024;

/**
 * The Distribution API's HTTP: the scheme per host, authentication
 * (RegistryAuthorizer), a deadline on every request that moves with the
 * bytes, abort, redirects, and failures as RegistryError with one code per
 * meaning. No header or URL query ever reaches a message or a log line.
 */
export class RegistryHttp {
  readonly #options: RegistryHttpOptions;
  readonly authorizer: RegistryAuthorizer;

  constructor(options: RegistryHttpOptions) {
    this.#options = options;
    this.authorizer = new RegistryAuthorizer(options.credentials, (url, init, what) => this.#fetchToken(url, init, what));
  }

  /** `http` or `https` for a registry host; an `insecure` entry without a port covers every port. */
  scheme(host: string): "http" | "https" {
    const { insecure } = this.#options;
    if (isLoopback(host) || insecure === true) return "http";
    const name = host.toLowerCase();
    const bare = name.replace(/:\d+$/, "");
    return Array.isArray(insecure) && insecure.some((entry) => [name, bare].includes(entry.toLowerCase())) ? "http" : "https";
  }

  url(host: string, path: string): URL {
    return new URL(path, `${this.scheme(host)}://${host}`);
  }

  /** Sends a request, answering one 401 challenge; rejects with RegistryError for any failure. */
  async request(request: RegistryRequest): Promise<RegistryResponse> {
    let authorization = await this.authorizer.authorization(request.host, request.scopes, request.signal);
    let response = await this.#send(request, authorization);
    if (response.status === 401) {
      const challenge = response.headers.get("www-authenticate") ?? "";
      await response.discard();
      const replayable = request.body === undefined || request.body instanceof Uint8Array;
      const next = await this.authorizer.challenged(request.host, request.scopes, challenge, authorization, request.what, request.signal);
      if (!replayable) {
        // The stream was spent on the refused attempt: this one fails. (pushBlob asks with a bodiless
        // POST first, so the PUT that streams goes out already authorized.)
        throw new RegistryError("UNAUTHENTICATED", `${request.what}: the registry asked for authentication during an upload`, { host: request.host, status: 401 });
      }
      authorization = next;
      response = await this.#send(request, authorization);
    }
    if (response.status >= 200 && response.status < 300) return response;
    if (request.accept?.includes(response.status)) return response;
    throw await this.#failure(request, response);
  }

  async #send(request: RegistryRequest, authorization: string | undefined): Promise<RegistryResponse> {
    const url = /^https?:\/\//.test(request.path) ? new URL(request.path) : this.url(request.host, request.path);
    const headers: Record<string, string> = { "User-Agent": this.#options.userAgent, ...request.headers };
    // Only to the registry itself: an upload's Location may send the bytes to another host (storage).
    if (authorization && url.host === this.url(request.host, "/").host) headers.Authorization = authorization;
    log(`${request.method} ${url.origin}${url.pathname}`);
    return this.#fetch(url, { method: request.method, headers, ...(request.body !== undefined ? { body: request.body } : {}) }, request.host, request.what, request.signal);
  }

  /** The token service's request: the same deadline and error mapping, no registry auth. */
  #fetchToken(url: URL, init: { method: "GET" | "POST"; headers: Record<string, string>; body?: string }, what: string): Promise<RegistryResponse> {
    log(`token ${init.method} ${url.origin}${url.pathname}`);
    return this.#fetch(url, { ...init, headers: { "User-Agent": this.#options.userAgent, ...init.headers } }, url.host, `${what} (token service)`, undefined);
  }

  async #fetch(
    url: URL,
    init: { method: string; headers: Record<string, string>; body?: Uint8Array | AsyncIterable<Uint8Array> | string },
    host: string,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<RegistryResponse> {
    if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
    const deadline = new IdleDeadline(this.#options.timeoutMs);
    const aborts = AbortSignal.any(signal ? [signal, deadline.signal] : [deadline.signal]);
    const fail = (err: unknown): never => {
      deadline.stop();
      if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
      if (deadline.expired) throw new RegistryError("TIMEOUT", `${what}: the registry did not answer within ${this.#options.timeoutMs} ms`, { host, cause: err });
      throw networkError(err, host, what, url);
    };
    let body = init.body;
    const streamed = body !== undefined && typeof body !== "string" && !(body instanceof Uint8Array);
    if (streamed) body = deadline.watch(body as AsyncIterable<Uint8Array>);
    let raw: Response;
    try {
      raw = await fetch(url, {
        method: init.method,
        headers: init.headers,
        signal: aborts,
        // A streamed body cannot follow a redirect anyway; and with "follow", undici's fetch
        // tees it and keeps every byte sent in memory until the end (nodejs/undici#4058).
        redirect: streamed ? "error" : "follow",
        ...(body !== undefined ? { body, duplex: "half" } : {}),
      } as RequestInit);
    } catch (err) {
      return fail(err);
    }
    deadline.touch();
    let used = false;
    const stream = async function* (): AsyncGenerator<Uint8Array> {
      if (used) throw new Error("a registry response body can be read once");
      used = true;
      if (!raw.body) return deadline.stop();
      try {
        for await (const chunk of raw.body as unknown as AsyncIterable<Uint8Array>) {
          deadline.touch();
          yield chunk;
        }
      } catch (err) {
        fail(err);
      } finally {
        // (A reader that stops early cancels the body through the iterator's return.)
        deadline.stop();
      }
    };
    const bytes = async (limit = documentLimit): Promise<Uint8Array> => {
      const chunks: Uint8Array[] = [];
      let total = 0;
      for await (const chunk of stream()) {
        total += chunk.byteLength;
        if (total > limit) throw new RegistryError("RESOURCE_EXHAUSTED", `${what}: the registry's answer is larger than ${limit} bytes`, { host });
        chunks.push(chunk);
      }
      return Buffer.concat(chunks);
    };
    if (init.method === "HEAD") deadline.stop();
    return {
      status: raw.status,
      headers: raw.headers,
      url: raw.url,
      body: stream,
      bytes,
      discard: async () => {
        deadline.stop();
        if (!used) await raw.body?.cancel().catch(() => {});
      },
    };
  }

  /** A failed response as a RegistryError with the registry's own error code, when its body says one. */
  async #failure(request: RegistryRequest, response: RegistryResponse): Promise<RegistryError> {
    let registryCode: string | undefined;
    let detail = "";
    if (request.method !== "HEAD") {
      const text = await response.bytes(64 * 1024).then(
        (b) => Buffer.from(b).toString("utf8"),
        () => "",
      );
      try {
        const errors = (JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] }).errors;
        const first = errors?.[0];
        if (typeof first?.code === "string") registryCode = first.code;
        if (first) detail = `${registryCode ?? ""}${typeof first.message === "string" && first.message ? `: ${first.message}` : ""}`;
      } catch {
        // Not the API's JSON (a proxy's page, say): the status says enough.
      }
    } else {
      await response.discard();
    }
    let code = codeForStatus(response.status, registryCode);
    let hint = "";
    if (response.status === 401 || response.status === 403) {
      const credentials = await this.#options.credentials(request.host).catch(() => undefined);
      // A token whose scope fell short: with credentials, they do not allow this; without, they are missing.
      const insufficient = parseChallenge(response.headers.get("www-authenticate") ?? "")?.params.error === "insufficient_scope";
      if (!credentials) {
        code = "UNAUTHENTICATED";
        hint = ` (no credentials are configured for ${request.host})`;
      } else if (insufficient || response.status === 403) {
        code = "PERMISSION_DENIED";
        hint = ` (the credentials for ${request.host} do not allow this)`;
      } else {
        hint = ` (the registry refused the credentials configured for ${request.host})`;
      }
    }
    return new RegistryError(code, `${request.what}: the registry answered ${response.status}${detail ? ` ${detail.slice(0, 300)}` : ""}${hint}`, {
      host: request.host,
      status: response.status,
      ...(registryCode ? { registryCode } : {}),
    });
  }
}

/**
 * A deadline that restarts whenever bytes move (`touch`), so a large blob
 * streams for as long as it keeps moving while a stalled one fails.
 */
class IdleDeadline {
  readonly #controller = new AbortController();
  readonly #ms: number;
  #timer: NodeJS.Timeout | undefined;
  expired = false;

  constructor(ms: number) {
    this.#ms = ms;
    this.touch();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Called for every chunk: the running timer is moved on (`refresh`), not replaced. */
  touch(): void {
    if (this.expired) return;
    if (this.#timer) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(() => {
      this.expired = true;
      this.#controller.abort(new Error("registry request deadline"));
    }, this.#ms);
    this.#timer.unref();
  }

  stop(): void {
    clearTimeout(this.#timer);
    // (A cleared timer cannot be refreshed: a later touch arms a new one.)
    this.#timer = undefined;
  }

  /** A request body that moves the deadline with every chunk taken from it. */
  async *watch(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      this.touch();
      yield chunk;
    }
    this.touch();
  }
}

/** `localhost`, `127.x.x.x`, `[::1]`, with or without a port. */
export function isLoopback(host: string): boolean {
  return /^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$/i.test(host);
}

/** Why fetch failed, by the cause's code: TLS, a deadline, or the registry out of reach. */
function networkError(err: unknown, host: string, what: string, url: URL): RegistryError {
  const cause = (err as { cause?: unknown })?.cause ?? err;
  const code = typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" ? cause.code : "";
  const text = cause instanceof Error ? cause.message : String(cause);
  if (/^(ERR_SSL|ERR_TLS|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/.test(code) || /SSL|TLS|certificate/i.test(text)) {
    const hint = /wrong version number|packet length too long/i.test(text) ? `; if ${host} speaks plain HTTP, pass it in the client's insecure option` : "";
    return new RegistryError("TLS", `${what}: TLS with ${url.host} failed (${code || text})${hint}`, { host, cause: err });
  }
  if (/redirect/i.test(text)) {
    return new RegistryError("UNIMPLEMENTED", `${what}: ${url.host} redirected an upload, which cannot be followed with a streamed body`, { host, cause: err });
  }
  if (/TIMEOUT/i.test(code)) return new RegistryError("TIMEOUT", `${what}: ${url.host} did not answer in time (${code})`, { host, cause: err });
  return new RegistryError("UNAVAILABLE", `${what}: cannot reach ${url.host} (${code || text})`, { host, cause: err });
}
