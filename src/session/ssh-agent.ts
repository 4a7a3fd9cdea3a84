import { Duplex } from "node:stream";
import { createLogger } from "../log.js";
import type { AgentKey } from "./ssh-keys.js";
import { SshFormatError, SshReader, sshString, sshUint32 } from "./ssh-wire.js";

const log = createLogger("ssh");

/** Message numbers of the SSH agent protocol (draft-miller-ssh-agent). */
const agentFailure = 5;
const requestIdentities = 11;
const identitiesAnswer = 12;
const signRequest = 13;
const signResponse = 14;

/** OpenSSH's agent refuses messages above 256 KiB; so do we. */
const maxMessageBytes = 256 * 1024;

/**
 * One connection to an SSH agent that holds `keys` in this process: a
 * Duplex taking agent requests and giving answers, as a unix socket to
 * ssh-agent would. It lists identities and signs; every other request is
 * answered FAILURE (no adding, removing or locking keys). Ends its readable
 * side when the writable side ends, as ssh-agent closes on EOF.
 */
export function keyAgentConnection(keys: readonly AgentKey[]): Duplex {
  let pending: Buffer = Buffer.alloc(0);
  // Set while a write waits for the reader to take earlier answers.
  let resumeWriting: (() => void) | undefined;
  return new Duplex({
    read() {
      const resume = resumeWriting;
      resumeWriting = undefined;
      resume?.();
    },
    write(chunk: Buffer, _encoding, callback) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let wantsMore = true;
      try {
        while (pending.length >= 4) {
          const length = pending.readUInt32BE(0);
          if (length === 0 || length > maxMessageBytes) throw new Error(`SSH agent request of ${length} bytes refused`);
          if (pending.length < 4 + length) break;
          const request = pending.subarray(4, 4 + length);
          pending = pending.subarray(4 + length);
          wantsMore = this.push(agentAnswer(keys, request));
        }
      } catch (err) {
        return callback(err instanceof Error ? err : new Error(String(err)));
      }
      if (wantsMore) callback();
      else resumeWriting = () => callback();
    },
    final(callback) {
      this.push(null);
      callback();
    },
  });
}

/** Answers one request (message type byte and contents) with a framed reply. */
function agentAnswer(keys: readonly AgentKey[], request: Buffer): Buffer {
  const type = request[0];
  if (type === requestIdentities) {
    const list = keys.map((key) => Buffer.concat([sshString(key.publicBlob), sshString(key.comment)]));
    return agentMessage(identitiesAnswer, Buffer.concat([sshUint32(keys.length), ...list]));
  }
  if (type === signRequest) {
    let blob: Buffer, data: Buffer, flags: number;
    try {
      const reader = new SshReader(request.subarray(1));
      [blob, data, flags] = [reader.string(), reader.string(), reader.uint32()];
    } catch (err) {
      if (!(err instanceof SshFormatError)) throw err;
      log("SSH agent: malformed sign request");
      return agentMessage(agentFailure);
    }
    const key = keys.find((k) => k.publicBlob.equals(blob));
    if (!key) {
      log("SSH agent: sign request for a key we do not hold");
      return agentMessage(agentFailure);
    }
    try {
      return agentMessage(signResponse, sshString(key.sign(data, flags)));
    } catch (err) {
      // node:crypto's messages name the failure, never key bytes.
      log(`SSH agent: signing failed: ${err instanceof Error ? err.message : String(err)}`);
      return agentMessage(agentFailure);
    }
  }
  log(`SSH agent: request type ${type ?? "(none)"} answered FAILURE`);
  return agentMessage(agentFailure);
}

function agentMessage(type: number, contents: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([sshUint32(1 + contents.length), Buffer.of(type), contents]);
}
