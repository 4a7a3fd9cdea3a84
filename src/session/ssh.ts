import { readFileSync, type Stats, statSync } from "node:fs";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { BuildKitNodeError } from "../errors.js";
import { BytesMessageSchema, CheckAgentRequestSchema, CheckAgentResponseSchema, SSH } from "../gen/moby/sshforward/v1/ssh_pb.js";
import { createLogger } from "../log.js";
import type { Attachable } from "./attachable.js";
import { decodeMessages, GrpcCode, GrpcStatusError, metadataValue, type ServerCall, sendMessage, unary } from "./grpc-server.js";
import { errnoCode } from "./errno-code.js";
import { expandHome } from "./home-path.js";
import { keyAgentConnection } from "./ssh-agent.js";
import { type AgentKey, parseAgentKey, SshKeyError } from "./ssh-keys.js";

const log = createLogger("ssh");

/**
 * An SSH agent for `RUN --mount=type=ssh[,id=…]`:
 * - `"default"`: the agent at `$SSH_AUTH_SOCK`, under id `default`;
 * - `"<id>"` or `"<id>=<path>[,<path>…]"` (buildx's `--ssh` syntax): one
 *   agent socket, or private key files, or `$SSH_AUTH_SOCK` without paths;
 * - `{ id, socket }`: an agent socket; `{ id, keys }`: private key files,
 *   served by an agent inside this process; `{ id }`: `$SSH_AUTH_SOCK`.
 */
export type SshSource = string | { id: string; socket?: string; keys?: string[] };

export interface SshAttachable extends Attachable {
  /** Ends every forwarded agent connection still open. */
  close(): Promise<void>;
}

const defaultId = "default";

type Agent = { kind: "socket"; path: string } | { kind: "keys"; keys: AgentKey[] };

/**
 * `moby.sshforward.v1.SSH`: CheckAgent says whether an id is configured;
 * ForwardAgent carries one agent connection made inside the build container
 * (id in metadata `buildkit.ssh.id`). Sources are checked and key files read
 * now, so mistakes surface before the build: BuildKitNodeError
 * INVALID_ARGUMENT naming the id and the path, never key material.
 */
export function sshAttachable(sources: SshSource[]): SshAttachable {
  const agents = new Map<string, Agent>();
  for (const source of sources) {
    const [id, agent] = resolveSource(source);
    if (agents.has(id)) throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}" is given twice`);
    agents.set(id, agent);
  }

  const open = new Set<Duplex>();
  let closed = false;
  const service = `/${SSH.typeName}`;
  return {
    routes: new Map([
      [
        `${service}/CheckAgent`,
        unary(CheckAgentRequestSchema, CheckAgentResponseSchema, async (request) => {
          const id = request.id || defaultId;
          if (!agents.has(id)) throw new GrpcStatusError(GrpcCode.NOT_FOUND, `no SSH agent with id "${id}" in this build`);
          return create(CheckAgentResponseSchema);
        }),
      ],
      [
        `${service}/ForwardAgent`,
        async (call) => {
          const id = metadataValue(call, "buildkit.ssh.id") || defaultId;
          const agent = agents.get(id);
          if (!agent) throw new GrpcStatusError(GrpcCode.NOT_FOUND, `no SSH agent with id "${id}" in this build`);
          const connection = agent.kind === "keys" ? keyAgentConnection(agent.keys) : await connectAgentSocket(id, agent.path);
          if (closed) {
            connection.destroy();
            throw new GrpcStatusError(GrpcCode.UNAVAILABLE, "the SSH attachable is closed");
          }
          log(`ForwardAgent "${id}": connected to ${agent.kind === "keys" ? "the in-process key agent" : agent.path}`);
          open.add(connection);
          try {
            await forwardAgentConnection(call, connection);
          } finally {
            open.delete(connection);
            connection.destroy();
          }
        },
      ],
    ]),
    async close() {
      closed = true;
      for (const connection of open) connection.destroy();
      open.clear();
    },
  };
}

function resolveSource(source: SshSource): [string, Agent] {
  if (typeof source === "string") {
    const [id = "", paths] = splitOnce(source, "=");
    if (id === "") throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh source "${source}": the id is empty`);
    if (paths === undefined || paths === "") return [id, agentSocket(id, undefined)];
    const list = paths.split(",").filter(Boolean);
    // buildx's rule: one path that is a socket is an agent; otherwise key files.
    if (list.length === 1 && isSocket(expandHome(list[0]!))) return [id, agentSocket(id, list[0])];
    return [id, agentKeys(id, list)];
  }
  if (typeof source !== "object" || source === null || typeof source.id !== "string" || source.id === "") {
    throw new BuildKitNodeError("INVALID_ARGUMENT", "an ssh source needs an id");
  }
  const { id, socket, keys } = source;
  if (socket !== undefined && keys !== undefined) throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": give socket or keys, not both`);
  return [id, keys !== undefined ? agentKeys(id, keys) : agentSocket(id, socket)];
}

function agentSocket(id: string, socket: string | undefined): Agent {
  const given = socket ?? process.env.SSH_AUTH_SOCK;
  if (!given) throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": SSH_AUTH_SOCK is not set (start ssh-agent, or give key files)`);
  const path = expandHome(given);
  let stats: Stats;
  try {
    stats = statSync(path);
  } catch (err) {
    throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": agent socket ${path} cannot be reached (${errnoCode(err) ?? "unknown error"})`);
  }
  if (!stats.isSocket()) throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": ${path} is not a socket`);
  return { kind: "socket", path };
}

function agentKeys(id: string, paths: readonly string[]): Agent {
  if (paths.length === 0) throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": keys is empty`);
  const keys = paths.map((given) => {
    const path = expandHome(given);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": key file ${path} cannot be read (${errnoCode(err) ?? "unknown error"})`);
    }
    try {
      return parseAgentKey(text, path);
    } catch (err) {
      // SshKeyError messages give a reason and never key bytes; anything else is replaced.
      const reason = err instanceof SshKeyError ? err.message : "not a usable private key";
      throw new BuildKitNodeError("INVALID_ARGUMENT", `ssh "${id}": key file ${path}: ${reason}`);
    }
  });
  return { kind: "keys", keys };
}

function connectAgentSocket(id: string, path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new GrpcStatusError(GrpcCode.UNAVAILABLE, `SSH agent "${id}": cannot connect to ${path} (${err.code ?? err.message})`));
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

/**
 * Pipes one agent connection through the call, both ways, with
 * backpressure. The daemon's EOF half-closes the agent's side; the agent's
 * EOF ends the call; the call's abort destroys the connection.
 */
async function forwardAgentConnection(call: ServerCall, agent: Duplex): Promise<void> {
  // Errors also surface through the iteration below; this keeps a late one
  // (after the loop has ended) from going unhandled.
  agent.on("error", (err) => log(`${call.method}: agent connection: ${err.message}`));
  const onAbort = () => agent.destroy();
  if (call.signal.aborted) onAbort();
  else call.signal.addEventListener("abort", onAbort, { once: true });

  pumpCallToAgent(call, agent).catch((err: unknown) => {
    const error = err instanceof Error ? err : new Error(String(err));
    log(`${call.method}: daemon to agent: ${error.message}`);
    agent.destroy(error); // ends the loop below with this error, if it still runs
  });
  try {
    for await (const chunk of agent as AsyncIterable<Buffer>) {
      await sendMessage(call, BytesMessageSchema, create(BytesMessageSchema, { data: chunk }));
    }
  } finally {
    call.signal.removeEventListener("abort", onAbort);
  }
}

async function pumpCallToAgent(call: ServerCall, agent: Duplex): Promise<void> {
  for await (const message of decodeMessages(call, BytesMessageSchema)) {
    if (agent.destroyed || agent.writableEnded) throw new Error("the agent connection is closed");
    if (!agent.write(message.data)) await drained(agent);
  }
  if (!agent.destroyed) agent.end();
}

function drained(stream: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      stream.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      stream.off("drain", onDrain);
      reject(new Error("the agent connection closed"));
    };
    stream.once("drain", onDrain);
    stream.once("close", onClose);
  });
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + 1)];
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false; // not there: treated as a key file, whose read then reports the error
  }
}
