// What a transfer does with a file or directory of a local context it cannot
// read. Docker's client sends such a file empty without a word, and the
// image then holds a 0-byte file where the user's file should be; here the
// build fails naming it, unless the caller asks for Docker's behaviour, with
// a warning.
import { BuildKitNodeError } from "../../errors.js";
import { errnoCode } from "../errno-code.js";

/** `error`: the build fails with INVALID_ARGUMENT naming the path; `warn`: it is sent empty, with a warning. */
export type UnreadableMode = "error" | "warn";

export class UnreadablePolicy {
  constructor(
    private readonly mode: UnreadableMode,
    private readonly description: string,
    private readonly warn: (message: string) => void,
  ) {}

  /** Fails (throws INVALID_ARGUMENT) or warns about `path`, which could not be read. */
  report(path: string, kind: "file" | "directory", cause: unknown): void {
    const why = reason(cause);
    if (this.mode === "error") {
      throw new BuildKitNodeError(
        "INVALID_ARGUMENT",
        `${this.description}: cannot read the ${kind} ${path || "."}: ${why} (onUnreadable: "warn" sends it empty, as Docker does)`,
        { cause },
      );
    }
    this.warn(`${this.description}: cannot read the ${kind} ${path || "."} (${why}); it was sent empty`);
  }
}

/** Whether an error opening a file means it cannot be read (rather than that it is gone). */
export function isUnreadable(err: unknown): boolean {
  const code = errnoCode(err);
  return code !== "ENOENT" && code !== "ENOTDIR";
}

function reason(err: unknown): string {
  const code = errnoCode(err);
  if (code === "EACCES" || code === "EPERM" || code === "PERMISSION_DENIED") return "permission denied";
  if (code === "ELOOP") return "it was replaced by a symlink";
  return err instanceof Error ? err.message : String(err);
}
