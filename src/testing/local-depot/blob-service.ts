// `https://blob.depot.dev/blobs/<build>/<digest>`: what `depot push` asks of
// Depot for every blob of a saved build. The body names the destination
// (registry host, repository, and a token for it); the local Depot copies the
// blob there from the saved-image registry.
import type * as http from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildKitNodeError } from "../../errors.js";
import { copyBlob } from "./blob-copier.js";
import type { DepotContext } from "./context.js";

const MAX_BODY_BYTES = 64 * 1024;
const COPY_TIMEOUT_MS = 10 * 60_000;

interface BlobPushRequest {
  registryHost: string;
  repositoryNamespace: string;
  registryToken: string;
  tokenScheme: string;
}

export function blobService(depot: DepotContext): http.RequestListener {
  return (req, res) => {
    const answer = (status: number, message: string) => {
      if (!res.headersSent) res.writeHead(status, { "content-type": "text/plain" });
      res.end(`${message}\n`);
    };
    const match = /^\/blobs\/([^/]+)\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? "");
    if (req.method !== "POST" || !match) return answer(404, "no such endpoint");
    const [, buildId, digest] = match as unknown as [string, string, string];
    handle(depot, req, buildId, digest).then(
      (sent) => answer(200, sent ? "copied" : "already there"),
      (err: unknown) => {
        if (err instanceof ConnectError) return answer(err.code === Code.NotFound ? 404 : err.code === Code.Unauthenticated ? 401 : 403, err.rawMessage);
        const message = err instanceof Error ? err.message : String(err);
        depot.log(`blob ${digest} of build ${buildId}: ${message}`);
        answer(err instanceof BuildKitNodeError && err.code === "INVALID_ARGUMENT" ? 400 : 502, message);
      },
    );
  };
}

async function handle(depot: DepotContext, req: http.IncomingMessage, buildId: string, digest: string): Promise<boolean> {
  const build = depot.auth.buildFor(req.headers.authorization, buildId, { allowOrganization: true });
  const saved = depot.savedImages;
  if (!saved) throw new BuildKitNodeError("FAILED_PRECONDITION", "this local Depot has no saved-image registry");
  const body = parseBody(await readBody(req));
  const sent = await copyBlob({
    digest,
    from: { registry: saved.upstream, repository: build.projectId, authorization: saved.upstreamAuthorization },
    to: { host: body.registryHost, repository: body.repositoryNamespace, authorization: `${body.tokenScheme} ${body.registryToken}` },
    extraCa: [saved.caCertificate],
    signal: AbortSignal.timeout(COPY_TIMEOUT_MS),
  });
  // The blob belongs to the build's push under way (the CLI starts one per tag).
  const push = build.pushes.findLast((p) => !p.finishedAt);
  push?.blobsCopied.push(digest);
  return sent;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new BuildKitNodeError("INVALID_ARGUMENT", "the request body is too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function parseBody(text: string): BlobPushRequest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new BuildKitNodeError("INVALID_ARGUMENT", "the request body is not JSON");
  }
  const body = parsed as Partial<Record<keyof BlobPushRequest, unknown>>;
  const fields = ["registryHost", "repositoryNamespace", "registryToken", "tokenScheme"] as const;
  for (const field of fields) {
    if (typeof body[field] !== "string" || body[field] === "") throw new BuildKitNodeError("INVALID_ARGUMENT", `${field} is required`);
  }
  return body as BlobPushRequest;
}
