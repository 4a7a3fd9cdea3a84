// The FileSync attachable: serves the local directories of a build (by the
// names the frontend asks for, `context` and `dockerfile` usually) through
// `/moby.filesync.v1.FileSync/DiffCopy`. TarStream is declared by the
// service but never called by any daemon, so it is not served.
import { BuildKitNodeError } from "../../errors.js";
import type { Attachable } from "../attachable.js";
import { GrpcCode, GrpcStatusError, metadataValue, type ServerCall } from "../grpc-server.js";
import { sendTree } from "./diffcopy-sender.js";
import type { TransferFilter } from "./tree-filter.js";
import type { TreeSource } from "./tree-source.js";
import { type UnreadableMode, UnreadablePolicy } from "./unreadable.js";

/** The method the daemon calls (it checks the session lists it, case-insensitively). */
export const FILE_SYNC_DIFF_COPY = "/moby.filesync.v1.FileSync/DiffCopy";

export interface FileSyncOptions {
  /** What a file or directory that cannot be read does to the transfer (default `error`). */
  onUnreadable?: UnreadableMode;
  /** Told what was sent empty under `onUnreadable: "warn"`. */
  warn?: (message: string) => void;
}

export interface FileSyncAttachable extends Attachable {
  /**
   * The first failure on our side that made a transfer fail (an unreadable
   * file, a malformed pattern): the real cause of the daemon's error.
   */
  clientFailure(): BuildKitNodeError | undefined;
}

/** Serves each source under its local name. The sources stay open; the caller closes them. */
export function fileSyncAttachable(dirs: ReadonlyMap<string, TreeSource>, options: FileSyncOptions = {}): FileSyncAttachable {
  let clientFailure: BuildKitNodeError | undefined;
  const serve = async (call: ServerCall) => {
    try {
      await serveDiffCopy(dirs, call, options);
    } catch (err) {
      if (err instanceof BuildKitNodeError && err.code === "INVALID_ARGUMENT") {
        clientFailure ??= err;
        throw new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, err.message);
      }
      throw err;
    }
  };
  return { routes: new Map([[FILE_SYNC_DIFF_COPY, serve]]), clientFailure: () => clientFailure };
}

async function serveDiffCopy(dirs: ReadonlyMap<string, TreeSource>, call: ServerCall, options: FileSyncOptions): Promise<void> {
  const dirName = metadataValue(call, "dir-name") ?? "";
  const source = dirs.get(dirName);
  if (!source) throw new GrpcStatusError(GrpcCode.NOT_FOUND, `no access allowed to dir ${JSON.stringify(dirName)}`);
  const filter: TransferFilter = {
    includePatterns: metadataList(call, "include-patterns"),
    excludePatterns: metadataList(call, "exclude-patterns"),
    followPaths: metadataList(call, "followpaths"),
  };
  const unreadable = new UnreadablePolicy(options.onUnreadable ?? "error", source.description, options.warn ?? (() => {}));
  await sendTree(source, filter, call, unreadable);
}

/**
 * The values of a repeated metadata key, each its own value. From BuildKit
 * v0.12 the daemon URL-query-escapes them (and says so with `<key>-encoded`)
 * when any has non-ASCII characters.
 */
function metadataList(call: ServerCall, key: string): string[] {
  const values = call.metadata.get(key) ?? [];
  if (!parseGoBool(metadataValue(call, `${key}-encoded`))) return [...values];
  return values.map((value) => {
    try {
      return queryUnescape(value);
    } catch {
      throw new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, `${key}: malformed escaped value ${JSON.stringify(value)}`);
    }
  });
}

/** Go's strconv.ParseBool truths; anything else (or absent) is false. */
function parseGoBool(value: string | undefined): boolean {
  return value !== undefined && ["1", "t", "T", "true", "TRUE", "True"].includes(value);
}

/** Go's url.QueryUnescape: `+` is a space, `%XX` a byte; the bytes are UTF-8. */
function queryUnescape(value: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === "+") bytes.push(0x20);
    else if (ch === "%") {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Error(`bad escape at ${i}`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      const char = String.fromCodePoint(value.codePointAt(i)!);
      bytes.push(...Buffer.from(char, "utf8"));
      i += char.length - 1;
    }
  }
  return Buffer.from(bytes).toString("utf8");
}
