import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BuildOptions } from "../buildkit/build-options.js";
import { AbortError } from "../errors.js";

/** The context inputs a spool replays: each read gets a fresh stream of the same bytes. */
export type ReplayedInputs = Partial<Pick<BuildOptions, "context" | "extraContexts">>;

/** Uploads kept on disk for as long as the builds that read them run. */
export interface UploadSpool {
  /** The build's context inputs, with every upload stream replaced by a new read of its spooled copy. */
  replay(): ReplayedInputs;
  /** Deletes the spooled copies. Idempotent. */
  remove(): Promise<void>;
}

type Upload = { tar: Readable | AsyncIterable<Uint8Array> };

/** Whether any context input (main or named) is an upload stream, which can be read once. */
export function hasUploads(options: Pick<BuildOptions, "context" | "extraContexts">): boolean {
  return uploadsOf(options).length > 0;
}

function uploadsOf(options: Pick<BuildOptions, "context" | "extraContexts">): [string, Upload][] {
  const inputs: [string, unknown][] = [["context", options.context], ...Object.entries(options.extraContexts ?? {}).map(([k, v]): [string, unknown] => [`extra:${k}`, v])];
  return inputs.filter((entry): entry is [string, Upload] => typeof entry[1] === "object" && entry[1] !== null && "tar" in entry[1]);
}

/**
 * An upload stream (`{ tar }`, main or named context) can be read once, but
 * several machines' builds each read the whole of it: it is written to a
 * temp dir once, streamed, and each `replay()` opens it again. Directories
 * and in-memory files need no spool and are passed through as they are.
 */
export async function spoolUploads(options: Pick<BuildOptions, "context" | "extraContexts">, signal: AbortSignal | undefined): Promise<UploadSpool> {
  const uploads = uploadsOf(options);
  if (uploads.length === 0) return { replay: () => ({}), remove: async () => {} };

  const dir = await mkdtemp(join(tmpdir(), "buildkit-node-upload-"));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    const files = new Map<string, string>();
    for (const [key, { tar }] of uploads) {
      const file = join(dir, `${files.size}.tar`);
      await pipeline(tar, createWriteStream(file), ...(signal ? [{ signal }] : []));
      files.set(key, file);
    }
    const reopen = <T>(key: string, input: T): T | Upload => (files.has(key) ? { tar: createReadStream(files.get(key)!) } : input);
    return {
      replay: () => ({
        context: reopen("context", options.context) as BuildOptions["context"],
        ...(options.extraContexts
          ? { extraContexts: Object.fromEntries(Object.entries(options.extraContexts).map(([k, v]) => [k, reopen(`extra:${k}`, v) as typeof v])) }
          : {}),
      }),
      remove,
    };
  } catch (err) {
    await remove();
    throw signal?.aborted ? new AbortError("the build was aborted while its context was read", { cause: signal.reason }) : err;
  }
}
