// A real registry (Debian's docker-registry, distribution v2.8, the binary
// scripts/local-buildkit.sh installs) that wants Bearer tokens, and the token
// service it trusts: the flow of Docker Hub, GHCR and most registries, which
// the set-up script's htpasswd registry (Basic) cannot show. The registry
// verifies each token's signature (ES256, our own CA) and its scopes itself;
// the token service is ours, small, and records what it was asked for.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID, sign } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCertificateAuthority } from "../../src/testing/certificates.js";

const REGISTRY_BIN = process.env.BUILDKIT_NODE_TEST_REGISTRY_BIN ?? "/usr/bin/docker-registry";
const SERVICE = "bkn-test-registry";
const ISSUER = "bkn-test-issuer";

export interface TokenUser {
  password: string;
  /** An OAuth2 refresh token (docker's `identitytoken`) that stands for this user. */
  refreshToken?: string;
  /** The actions this user may take on a repository. */
  access(repository: string): string[];
}

export interface TokenRequest {
  method: string;
  /** The account that asked, or "" for anonymous. */
  account: string;
  grant: "basic" | "refresh_token" | "anonymous";
  scopes: string[];
  /** What the token granted, as `repository:name:actions`. */
  granted: string[];
}

export interface TokenRegistry {
  /** `127.0.0.1:<port>` of the registry. */
  host: string;
  readonly tokenRequests: TokenRequest[];
  close(): Promise<void>;
}

export async function startTokenRegistry(options: {
  users: Record<string, TokenUser>;
  /** What anyone may do without credentials. Default nothing. */
  anonymous?: (repository: string) => string[];
}): Promise<TokenRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "bkn-token-registry-"));
  const ca = createCertificateAuthority({ commonName: "bkn test token signer" });
  const caPath = join(dir, "ca.pem");
  await writeFile(caPath, ca.cert);
  const tokenRequests: TokenRequest[] = [];
  const tokens = startTokenService(ca, options, tokenRequests);
  await new Promise<void>((resolve) => tokens.listen(0, "127.0.0.1", resolve));
  const realm = `http://127.0.0.1:${(tokens.address() as AddressInfo).port}/token`;

  const config = join(dir, "config.yml");
  await writeFile(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: info",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${join(dir, "data")}`,
      "http:",
      "  addr: 127.0.0.1:0",
      `  secret: ${randomUUID()}`,
      "auth:",
      "  token:",
      `    realm: ${realm}`,
      `    service: ${SERVICE}`,
      `    issuer: ${ISSUER}`,
      `    rootcertbundle: ${caPath}`,
      "",
    ].join("\n"),
  );
  let registry: ChildProcess | undefined;
  try {
    registry = spawn(REGISTRY_BIN, ["serve", config], { stdio: ["ignore", "ignore", "pipe"] });
    const port = await listeningPort(registry);
    return {
      host: `127.0.0.1:${port}`,
      tokenRequests,
      close: async () => {
        await stop(registry!);
        await new Promise<void>((resolve) => {
          tokens.close(() => resolve());
          tokens.closeAllConnections();
        });
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (registry) await stop(registry);
    tokens.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** distribution logs "listening on 127.0.0.1:<port>" once it serves (it was given port 0). */
function listeningPort(registry: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`${REGISTRY_BIN} did not start listening:\n${log.slice(-2000)}`)), 20_000);
    registry.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${REGISTRY_BIN} (installed by scripts/local-buildkit.sh up): ${err.message}`));
    });
    registry.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${REGISTRY_BIN} exited with ${code}:\n${log.slice(-2000)}`));
    });
    registry.stderr!.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        registry.stderr!.removeAllListeners("data");
        registry.stderr!.resume();
        resolve(Number(match[1]));
      }
    });
  });
}

async function stop(registry: ChildProcess): Promise<void> {
  if (registry.exitCode !== null || registry.signalCode !== null) return;
  const exited = new Promise((resolve) => registry.once("exit", resolve));
  registry.kill("SIGTERM");
  await exited;
}

/**
 * The Docker token flow (distribution's token spec): `GET /token?service&scope…`
 * with Basic credentials or none, and the OAuth2 `POST /token` form with a
 * refresh token. Tokens are JWTs signed ES256, the signing certificate in
 * `x5c`, as distribution verifies them against its root bundle.
 */
function startTokenService(ca: { cert: string; key: string }, options: Parameters<typeof startTokenRegistry>[0], requests: TokenRequest[]): http.Server {
  const certificate = ca.cert.replace(/-----[^-]+-----|\s/g, "");
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://token");
      const form = new URLSearchParams(req.method === "POST" ? Buffer.concat(chunks).toString() : "");
      const scopes = req.method === "POST" ? (form.get("scope") ?? "").split(" ").filter(Boolean) : url.searchParams.getAll("scope");
      const who = identify(req, form, options.users);
      if (who === "refused") {
        res.writeHead(401, { "Content-Type": "application/json" }).end('{"details":"incorrect username or password"}');
        return;
      }
      const allowed = who.user ? who.user.access : (options.anonymous ?? (() => []));
      const access = scopes.flatMap((scope) => {
        const [type, name = "", actions = ""] = scope.split(":");
        const granted = actions.split(",").filter((action) => allowed(name).includes(action));
        return type === "repository" && granted.length > 0 ? [{ type, name, actions: granted }] : [];
      });
      requests.push({
        method: req.method ?? "",
        account: who.account,
        grant: who.grant,
        scopes,
        granted: access.map((a) => `${a.type}:${a.name}:${a.actions.join(",")}`),
      });
      const now = Math.floor(Date.now() / 1000);
      const token = jwt(ca.key, certificate, { iss: ISSUER, sub: who.account, aud: SERVICE, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access });
      res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
    });
  });
}

function identify(
  req: http.IncomingMessage,
  form: URLSearchParams,
  users: Record<string, TokenUser>,
): { account: string; user: TokenUser | undefined; grant: TokenRequest["grant"] } | "refused" {
  if (req.method === "POST") {
    if (form.get("grant_type") !== "refresh_token") return "refused";
    const entry = Object.entries(users).find(([, user]) => user.refreshToken && user.refreshToken === form.get("refresh_token"));
    return entry ? { account: entry[0], user: entry[1], grant: "refresh_token" } : "refused";
  }
  const header = req.headers.authorization;
  if (!header) return { account: "", user: undefined, grant: "anonymous" };
  const decoded = Buffer.from(header.replace(/^Basic /, ""), "base64").toString();
  const colon = decoded.indexOf(":");
  const account = decoded.slice(0, colon);
  const user = users[account];
  return user && user.password === decoded.slice(colon + 1) ? { account, user, grant: "basic" } : "refused";
}

function jwt(key: string, certificate: string, claims: Record<string, unknown>): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${encode({ typ: "JWT", alg: "ES256", x5c: [certificate] })}.${encode(claims)}`;
  const signature = sign("sha256", Buffer.from(signed), { key, dsaEncoding: "ieee-p1363" });
  return `${signed}.${signature.toString("base64url")}`;
}
