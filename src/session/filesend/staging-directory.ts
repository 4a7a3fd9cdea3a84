import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { chmod, lstat, mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import * as path from "node:path";
import { createLogger } from "../../log.js";
import { GrpcCode, GrpcStatusError } from "../grpc-server.js";

const log = createLogger("filesend");

/**
 * A directory beside `dest` (same parent, so the same filesystem) that a
 * transfer writes into, then moves into `dest` once complete: `dest` never
 * holds half an export. `remove()` (always call it) deletes whatever was not
 * moved: everything, after a failure.
 */
export class StagingDirectory {
  #committed = false;

  private constructor(
    readonly path: string,
    private readonly dest: string,
  ) {}

  static async besides(dest: string): Promise<StagingDirectory> {
    const target = path.resolve(dest);
    const existing = await statOrUndefined(target);
    if (existing && !existing.isDirectory()) {
      throw new GrpcStatusError(GrpcCode.FAILED_PRECONDITION, `the local output's destination ${target} exists and is not a directory`);
    }
    const parent = path.dirname(target);
    await mkdir(parent, { recursive: true });
    const staging = path.join(parent, `.${path.basename(target)}.partial-${randomBytes(6).toString("hex")}`);
    await mkdir(staging); // the mode dest gets when it is new: 0777 less the umask
    return new StagingDirectory(staging, target);
  }

  /**
   * Moves the staged tree into `dest`: a rename when `dest` does not exist;
   * else merged as buildctl's local exporter does (an existing directory is
   * kept and filled, anything else at an entry's path is replaced).
   */
  async commit(): Promise<void> {
    if (!(await statOrUndefined(this.dest))) {
      await rename(this.path, this.dest);
    } else {
      await mergeInto(this.path, this.dest);
    }
    this.#committed = true;
  }

  /** Removes what is left of the staging directory; never throws. */
  async remove(): Promise<void> {
    await rm(this.path, { recursive: true, force: true }).catch((err: unknown) =>
      log(`removing ${this.path}${this.#committed ? "" : " (a failed transfer)"}: ${err instanceof Error ? err.message : String(err)}`),
    );
  }
}

/** Moves every entry of `from` into `to`, descending into directories both have. Never follows a symlink inside `to`. */
async function mergeInto(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    const existing = await lstatOrUndefined(target);
    if (entry.isDirectory() && existing?.isDirectory()) {
      const staged = await lstat(source);
      await chmod(source, 0o700); // its own mode may forbid moving entries out of it
      await mergeInto(source, target);
      await chmod(target, staged.mode & 0o7777);
      await utimes(target, staged.atime, staged.mtime);
      continue;
    }
    if (existing) await rm(target, { recursive: true, force: true });
    await rename(source, target);
  }
}

async function statOrUndefined(p: string): Promise<Stats | undefined> {
  return stat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  return lstat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
}
