import * as http from "node:http";
import type { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { AbortError, BuildKitNodeError, TransportError } from "../errors.js";
import { formatImageReference, parseImageReference } from "../registry/reference.js";
import type { RegistryCredentials } from "../session/auth.js";
import { registryFailureCode } from "./failure-code.js";

export interface EngineProgress {
  /** A layer id, or "" for the operation as a whole. */
  id: string;
  status: string;
  current: number;
  total: number;
}

/**
 * How long an Engine API call may go without a byte either way (a push
 * reports progress as it goes; a load streams its archive) before it fails
 * with TIMEOUT: the Engine, or the registry behind it, stopped answering.
 */
const ENGINE_IDLE_TIMEOUT_MS = 2 * 60_000;

/**
 * The few Docker Engine API calls a build needs next to dockerd's embedded
 * BuildKit, which can only store images: push, load and save. The Engine
 * reports failures inside a 200 response's JSON stream; each of them is
 * turned into an error here, never dropped. Every failure is a
 * BuildKitNodeError: the Engine unreachable or its connection lost is a
 * TransportError UNAVAILABLE, silence past `idleTimeoutMs` TIMEOUT, a
 * registry's refusal UNAUTHENTICATED / PERMISSION_DENIED / UNAVAILABLE.
 */
export class DockerEngine {
  readonly #idleTimeoutMs: number;

  constructor(
    readonly socketPath: string,
    options: { idleTimeoutMs?: number } = {},
  ) {
    this.#idleTimeoutMs = options.idleTimeoutMs ?? ENGINE_IDLE_TIMEOUT_MS;
  }

  /** The Engine's address, as errors name it. */
  get address(): string {
    return `unix://${this.socketPath}`;
  }

  /** `POST /images/{name}/push`; resolves with the digest the registry holds. */
  async push(
    reference: string,
    credentials: RegistryCredentials | undefined,
    options: { signal?: AbortSignal; onProgress?: (p: EngineProgress) => void } = {},
  ): Promise<{ digest?: string }> {
    const { repository, tag } = splitReference(reference);
    const response = await this.#request({
      method: "POST",
      path: `/images/${encodeURIComponent(repository)}/push?tag=${encodeURIComponent(tag)}`,
      headers: { "X-Registry-Auth": registryAuthHeader(credentials) },
      signal: options.signal,
      what: `pushing ${reference}`,
    });
    let digest: string | undefined;
    await this.#readJsonStream(response, `pushing ${reference}`, (message) => {
      const aux = message.aux as { Digest?: string } | undefined;
      if (aux?.Digest) digest = aux.Digest;
      const detail = message.progressDetail as { current?: number; total?: number } | undefined;
      if (typeof message.status === "string") {
        options.onProgress?.({ id: String(message.id ?? ""), status: message.status, current: detail?.current ?? 0, total: detail?.total ?? 0 });
      }
    });
    return digest ? { digest } : {};
  }

  /** `POST /images/load` with a docker-format tar; resolves with what was loaded. */
  async load(archive: Readable, options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const response = await this.#request({
      method: "POST",
      path: "/images/load?quiet=1",
      headers: { "Content-Type": "application/x-tar" },
      body: archive,
      signal: options.signal,
      what: "loading the image into Docker",
    });
    const loaded: string[] = [];
    await this.#readJsonStream(response, "loading the image into Docker", (message) => {
      const match = typeof message.stream === "string" ? /Loaded image(?: ID)?: (\S+)/.exec(message.stream) : null;
      if (match) loaded.push(match[1]!);
    });
    return loaded;
  }

  /** `GET /images/get`: the images as a docker-format tar stream. */
  async save(names: string[], options: { signal?: AbortSignal } = {}): Promise<Readable> {
    const query = names.map((n) => `names=${encodeURIComponent(n)}`).join("&");
    return this.#request({ method: "GET", path: `/images/get?${query}`, signal: options.signal, what: `saving ${names.join(", ")}` });
  }

  #request(request: {
    method: string;
    path: string;
    headers?: http.OutgoingHttpHeaders;
    body?: Readable;
    signal?: AbortSignal | undefined;
    what: string;
  }): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, method: request.method, path: request.path, headers: request.headers ?? {} });
      // A failed request must release its body: whoever writes into it would
      // otherwise wait for room forever.
      const fail = (err: Error) => {
        request.body?.destroy(err);
        reject(err);
      };
      const onAbort = () => {
        req.destroy();
        fail(new AbortError(`${request.what} was aborted`, { cause: request.signal?.reason }));
      };
      if (request.signal?.aborted) return onAbort();
      request.signal?.addEventListener("abort", onAbort, { once: true });
      let answer: http.IncomingMessage | undefined;
      // Idle from the first byte on: a load's body may wait for the build to export.
      const armIdleTimeout = () =>
        req.setTimeout(this.#idleTimeoutMs, () => {
          const timeout = new BuildKitNodeError("TIMEOUT", `${request.what}: the Docker Engine at ${this.socketPath} was silent for ${this.#idleTimeoutMs / 1000} s`);
          answer?.destroy(timeout); // whoever reads the answer sees why
          req.destroy(timeout);
        });
      req.on("error", (err) => fail(this.#connectionError(err, request.what)));
      req.on("response", (response) => {
        answer = response;
        response.on("close", () => request.signal?.removeEventListener("abort", onAbort));
        if (response.statusCode !== 200) {
          readBody(response).then(
            (body) => fail(engineError(response.statusCode ?? 0, body, request.what)),
            (err: Error) => fail(this.#connectionError(err, request.what)),
          );
          return;
        }
        resolve(response);
      });
      if (request.body) {
        request.body.once("data", armIdleTimeout);
        request.body.on("error", (err) => req.destroy(err));
        request.body.pipe(req);
      } else {
        armIdleTimeout();
        req.end();
      }
    });
  }

  /** A socket-level failure: the Engine is not there, or its connection broke. */
  #connectionError(err: Error, what: string): BuildKitNodeError {
    if (err instanceof BuildKitNodeError) return err;
    return new TransportError("UNAVAILABLE", this.address, `${what}: the Docker Engine at ${this.socketPath}: ${err.message}`, { cause: err });
  }

  async #readJsonStream(response: http.IncomingMessage, what: string, onMessage: (m: Record<string, unknown>) => void): Promise<void> {
    try {
      await readJsonStream(response, what, onMessage);
    } catch (err) {
      throw this.#connectionError(err as Error, what);
    }
  }
}

/** `registry:5000/repo/name:tag` → the repository as Docker names it, and the tag (default `latest`). */
function splitReference(reference: string): { repository: string; tag: string } {
  const image = parseImageReference(reference);
  if (image.digest !== undefined) throw new BuildKitNodeError("INVALID_ARGUMENT", `cannot push a digest reference: ${reference}`);
  return { repository: formatImageReference({ ...image, tag: undefined }, "familiar"), tag: image.tag ?? "latest" };
}

function registryAuthHeader(credentials: RegistryCredentials | undefined): string {
  const body = credentials?.identityToken
    ? { identitytoken: credentials.identityToken }
    : credentials?.username !== undefined
      ? { username: credentials.username, password: credentials.password ?? "" }
      : {};
  // URL-safe alphabet *with* padding: dockerd 20.10 decodes with Go's
  // base64.URLEncoding and ignores a header it cannot decode.
  return Buffer.from(JSON.stringify(body)).toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
}

async function readJsonStream(response: http.IncomingMessage, what: string, onMessage: (m: Record<string, unknown>) => void): Promise<void> {
  let buffer = "";
  let failure: string | undefined;
  const handle = (line: string) => {
    if (!line.trim()) return;
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      throw new BuildKitNodeError("INTERNAL", `${what}: the Docker Engine sent a line that is not JSON`, { cause: err });
    }
    const detail = message.errorDetail as { message?: string } | undefined;
    if (detail || message.error) failure ??= detail?.message ?? String(message.error);
    else onMessage(message);
  };
  // A character's bytes may be split between chunks.
  const decoder = new StringDecoder("utf8");
  for await (const chunk of response as AsyncIterable<Buffer>) {
    buffer += decoder.write(chunk);
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    lines.forEach(handle);
  }
  handle(buffer + decoder.end());
  if (failure !== undefined) throw new BuildKitNodeError(registryFailureCode(failure) ?? "UNKNOWN", `${what}: ${failure}`);
}

async function readBody(response: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

function engineError(status: number, body: string, what: string): BuildKitNodeError {
  let message = body.trim();
  try {
    message = (JSON.parse(body) as { message?: string }).message ?? message;
  } catch {
    // not JSON: keep the text
  }
  const code = status === 404 ? "NOT_FOUND" : status === 401 || status === 403 ? "UNAUTHENTICATED" : "UNKNOWN";
  return new BuildKitNodeError(code, `${what}: Docker Engine answered ${status}: ${message.slice(0, 500)}`);
}
