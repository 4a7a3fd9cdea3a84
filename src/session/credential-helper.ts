import { spawn } from "node:child_process";
import { BuildKitNodeError } from "../errors.js";
import { createLogger } from "../log.js";
import type { RegistryCredentials } from "./auth.js";

const log = createLogger("auth");

/** What a helper prints (exit 1) when it holds nothing for the server. */
const notFoundMessage = "credentials not found in native keychain";
/** A helper's reply with this user name carries an identity token as its Secret. */
const tokenUsername = "<token>";
/** A `get` reply is a small JSON object; anything near this is not one. */
const maxReplyBytes = 1024 * 1024;

/**
 * Asks `docker-credential-<helper> get` for the credentials of `serverUrl`
 * (the docker credential-helper protocol: the server URL on stdin, JSON
 * `{ServerURL, Username, Secret}` on stdout). Undefined when the helper holds
 * none. The helper's own output never goes into an error or a log line: on
 * failure it may echo what it read.
 */
export async function credentialsFromHelper(helper: string, serverUrl: string, timeoutMs: number): Promise<RegistryCredentials | undefined> {
  const program = `docker-credential-${helper}`;
  log(`asking ${program} for ${serverUrl}`);
  const { exitCode, stdout } = await runWithInput(program, ["get"], serverUrl, timeoutMs);
  if (exitCode !== 0) {
    if (stdout.trim() === notFoundMessage) return undefined;
    throw new BuildKitNodeError("UNAVAILABLE", `${program} get failed for ${serverUrl} (exit ${exitCode ?? "by signal"})`);
  }
  let reply: unknown;
  try {
    reply = JSON.parse(stdout);
  } catch {
    // No `cause`: the SyntaxError would quote the reply, secret included.
    throw new BuildKitNodeError("UNAVAILABLE", `${program} get returned malformed JSON for ${serverUrl}`);
  }
  if (typeof reply !== "object" || reply === null) throw new BuildKitNodeError("UNAVAILABLE", `${program} get returned malformed JSON for ${serverUrl}`);
  const username = "Username" in reply && typeof reply.Username === "string" ? reply.Username : "";
  const secret = "Secret" in reply && typeof reply.Secret === "string" ? reply.Secret : "";
  if (secret === "" && username === "") return undefined;
  if (username === tokenUsername) return { identityToken: secret };
  return { username, password: secret };
}

/** Runs `program` with `input` on stdin; kills it and fails after `timeoutMs`. */
function runWithInput(program: string, args: string[], input: string, timeoutMs: number): Promise<{ exitCode: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    // No shell: the helper name comes from a config file.
    const child = spawn(program, args, { stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (finish: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      finish();
    };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      settle(() => reject(new BuildKitNodeError("TIMEOUT", `${program} get did not answer within ${timeoutMs} ms`)));
    }, timeoutMs);

    child.on("error", (err: NodeJS.ErrnoException) => {
      const reason = err.code === "ENOENT" ? "is not installed (not found on PATH)" : `could not be started (${err.code ?? "unknown error"})`;
      settle(() => reject(new BuildKitNodeError("FAILED_PRECONDITION", `credential helper ${program} ${reason}`)));
    });
    child.stdout.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxReplyBytes) chunks.push(chunk);
    });
    // A helper that exits without reading stdin makes this write fail with
    // EPIPE; its exit status, handled on "close", is what reports the outcome.
    child.stdin.on("error", (err) => log(`${program}: stdin: ${err.message}`));
    child.stdin.end(input);
    child.on("close", (exitCode) => {
      if (size > maxReplyBytes) {
        settle(() => reject(new BuildKitNodeError("UNAVAILABLE", `${program} get replied with more than ${maxReplyBytes} bytes`)));
        return;
      }
      settle(() => resolve({ exitCode, stdout: Buffer.concat(chunks).toString("utf8") }));
    });
  });
}
