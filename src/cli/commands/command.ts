import type { FlagSpecs, ParsedArgs } from "../args.js";
import type { CliContext } from "../context.js";

/** One command of `buildkit-node`, e.g. `build` or `projects list`. */
export interface Command {
  /** The words that name it: `build`, `projects list`. */
  name: string;
  /** The usage line after `Usage: `. */
  usage: string;
  /** One line for the command list. */
  summary: string;
  /** The paragraph of its `--help`. */
  description: string;
  /** Its flags (`-h, --help` is added to every command). */
  flags: FlagSpecs;
  maxPositionals: number;
  /** Extra text at the end of its `--help`. */
  footer?: string;
  /** Runs it; resolves to the exit code, or throws (the caller maps errors to exit codes). */
  run(args: ParsedArgs, ctx: CliContext): Promise<number>;
}
