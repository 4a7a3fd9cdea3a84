// Depot copies a saved build's blobs to the user's registry itself (the
// `depot` CLI asks it to, one blob at a time, with a token for the
// destination), so `depot push` never downloads layers. This is that copy:
// one blob streamed from the saved-image registry to another registry's
// upload endpoint, skipped when the destination already has it.
import * as http from "node:http";
import * as https from "node:https";
import type { Readable } from "node:stream";
import * as tls from "node:tls";
import { BuildKitNodeError } from "../../errors.js";

export interface BlobCopy {
  digest: string;
  /** The saved-image registry (plain HTTP) and the repository holding the blob. */
  from: { registry: string; repository: string; authorization?: string | undefined };
  /** The destination: a host spoken to over HTTPS, a repository, and an Authorization value. */
  to: { host: string; repository: string; authorization: string };
  /** CAs the destination's certificate may chain to, besides Node's own. */
  extraCa: readonly string[];
  signal: AbortSignal;
}

/** Returns whether the blob was sent (false: the destination had it). */
export async function copyBlob(copy: BlobCopy): Promise<boolean> {
  const ca = [...tls.rootCertificates, ...copy.extraCa];
  const destination = (path: string) => new URL(`https://${copy.to.host}/v2/${copy.to.repository}/blobs/${path}`);
  const auth = { authorization: copy.to.authorization };

  const existing = await send(destination(copy.digest), { method: "HEAD", headers: auth, ca, signal: copy.signal });
  existing.resume();
  if (existing.statusCode === 200) return false;

  const started = await send(destination("uploads/"), { method: "POST", headers: { ...auth, "content-length": "0" }, ca, signal: copy.signal });
  started.resume();
  const location = started.headers.location;
  if (started.statusCode !== 202 || !location) throw new BuildKitNodeError("UNAVAILABLE", `the destination refused an upload (${started.statusCode})`);
  const upload = new URL(location, destination("uploads/"));
  upload.searchParams.set("digest", copy.digest);

  const source = await send(new URL(`http://${copy.from.registry}/v2/${copy.from.repository}/blobs/${copy.digest}`), {
    method: "GET",
    headers: copy.from.authorization ? { authorization: copy.from.authorization } : {},
    ca,
    signal: copy.signal,
  });
  if (source.statusCode !== 200) {
    source.resume();
    throw new BuildKitNodeError("UNAVAILABLE", `the saved image has no blob ${copy.digest} (${source.statusCode})`);
  }
  const length = source.headers["content-length"];
  const stored = await send(upload, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/octet-stream", ...(length ? { "content-length": length } : {}) },
    ca,
    signal: copy.signal,
    body: source,
  });
  stored.resume();
  if (stored.statusCode !== 201) throw new BuildKitNodeError("UNAVAILABLE", `the destination refused blob ${copy.digest} (${stored.statusCode})`);
  return true;
}

interface SendOptions {
  method: string;
  headers: http.OutgoingHttpHeaders;
  ca: string[];
  signal: AbortSignal;
  body?: Readable;
}

function send(url: URL, options: SendOptions): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const common = { method: options.method, headers: options.headers, signal: options.signal };
    const request = url.protocol === "https:" ? https.request(url, { ...common, ca: options.ca }, resolve) : http.request(url, common, resolve);
    request.on("error", (err) => {
      // The source's connection is not left open when the destination fails.
      options.body?.destroy();
      reject(err);
    });
    if (options.body) {
      options.body.on("error", (err) => request.destroy(err));
      options.body.pipe(request);
    } else {
      request.end();
    }
  });
}
