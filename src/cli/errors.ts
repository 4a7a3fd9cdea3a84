/** Exit codes of the `buildkit-node` command. */
export const EXIT = {
  ok: 0,
  /** The build (or a daemon call) failed. */
  failure: 1,
  /** Bad usage: an unknown flag, a malformed value, a missing argument. */
  usage: 2,
  /** Interrupted by SIGINT (128 + 2). */
  interrupted: 130,
} as const;

/**
 * The command line is wrong. `command` is the command whose `--help` the hint
 * points to (e.g. `build`, `projects create`).
 */
export class UsageError extends Error {
  override name = "UsageError";
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

/** The reason the command's AbortSignal carries after SIGINT or SIGTERM. */
export class Interrupted extends Error {
  override name = "Interrupted";
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }

  /** 130 for SIGINT, 143 for SIGTERM: 128 + the signal's number, as shells report it. */
  get exitCode(): number {
    return this.signal === "SIGTERM" ? 143 : EXIT.interrupted;
  }
}
