import { BuildKitNodeError, TransportError } from "../index.js";
import { helpText, parseCommandLine } from "./args.js";
import { buildCommand } from "./commands/build.js";
import type { Command } from "./commands/command.js";
import { duCommand } from "./commands/du.js";
import { localDepotCommand } from "./commands/local-depot.js";
import { projectsCommands } from "./commands/projects.js";
import { pullCommand, pushCommand } from "./commands/saved-builds.js";
import { workersCommand } from "./commands/workers.js";
import type { CliContext } from "./context.js";
import { EXIT, Interrupted, UsageError } from "./errors.js";
import { packageVersion } from "./version.js";

/** Every command, by the words that name it. */
const COMMANDS: Command[] = [buildCommand, workersCommand, duCommand, pullCommand, pushCommand, ...projectsCommands, localDepotCommand];

/** Commands made of two words share their first, e.g. `projects`. */
const GROUPS: Record<string, string> = { projects: "Manage Depot projects (DEPOT_TOKEN)" };

/**
 * Runs `buildkit-node ARGV…` and resolves to its exit code: 0 success,
 * 1 failure, 2 bad usage, 130 interrupted (SIGINT through `ctx.signal`).
 * Never rejects: every error is reported on `ctx.stderr`.
 */
export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  let command: Command | undefined;
  try {
    const [first, second] = argv;
    if (first === undefined || first === "-h" || first === "--help") {
      ctx.stdout.write(topLevelHelp());
      return EXIT.ok;
    }
    if (first === "--version" || first === "-v" || first === "version") {
      ctx.stdout.write(`buildkit-node ${packageVersion()}\n`);
      return EXIT.ok;
    }
    if (first === "help") return help(argv.slice(1), ctx);
    if (first.startsWith("-")) throw new UsageError(`unknown flag: ${first} (flags go after the command, e.g. "buildkit-node build ${first} …")`);
    if (first in GROUPS) {
      if (second === undefined) {
        ctx.stderr.write(groupHelp(first));
        return EXIT.usage;
      }
      if (second === "-h" || second === "--help") {
        ctx.stdout.write(groupHelp(first));
        return EXIT.ok;
      }
      command = COMMANDS.find((c) => c.name === `${first} ${second}`);
      if (!command) throw new UsageError(`unknown command "${first} ${second}"; ${first} has ${subcommands(first).join(", ")}`, first);
      return await runCommand(command, argv.slice(2), ctx);
    }
    command = COMMANDS.find((c) => c.name === first);
    if (!command) throw new UsageError(`unknown command "${first}"${suggestion(first)}`);
    return await runCommand(command, argv.slice(1), ctx);
  } catch (err) {
    return report(err, ctx, command);
  }
}

async function runCommand(command: Command, argv: string[], ctx: CliContext): Promise<number> {
  const args = parseCommandLine(command.name, argv, command.flags, command.maxPositionals);
  if (args.boolean("help")) {
    ctx.stdout.write(commandHelp(command));
    return EXIT.ok;
  }
  return command.run(args, ctx);
}

/** Prints what went wrong and picks the exit code. Nothing printed here carries a secret. */
function report(err: unknown, ctx: CliContext, command: Command | undefined): number {
  const write = (text: string) => ctx.stderr.write(text.endsWith("\n") ? text : `${text}\n`);
  const reason: unknown = ctx.signal.aborted ? ctx.signal.reason : undefined;
  if (reason instanceof Interrupted) {
    write(`ERROR: ${command?.name === "build" ? "build " : ""}canceled (${reason.signal})`);
    return reason.exitCode;
  }
  if (err instanceof UsageError) {
    const about = err.command ?? command?.name;
    write(`ERROR: ${err.message}\nRun 'buildkit-node ${about ? `${about} ` : ""}--help' for usage.`);
    return EXIT.usage;
  }
  if (err instanceof TransportError) {
    const hint = err.address === "" ? " (set BUILDKIT_HOST or pass --builder ADDRESS)" : "";
    write(`ERROR: ${err.message}${hint}`);
    return EXIT.failure;
  }
  if (err instanceof BuildKitNodeError) {
    write(`ERROR: ${err.message}`);
    return EXIT.failure;
  }
  const message = err instanceof Error ? err.message : String(err);
  write(`ERROR: ${message}`);
  if (ctx.env.DEBUG && err instanceof Error && err.stack) write(err.stack);
  return EXIT.failure;
}

function help(topic: string[], ctx: CliContext): number {
  const name = topic.join(" ");
  if (name === "") {
    ctx.stdout.write(topLevelHelp());
    return EXIT.ok;
  }
  if (name in GROUPS) {
    ctx.stdout.write(groupHelp(name));
    return EXIT.ok;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`no help for unknown command "${name}"`);
  ctx.stdout.write(commandHelp(command));
  return EXIT.ok;
}

function commandHelp(command: Command): string {
  return helpText(command.usage, command.description, command.flags, command.footer);
}

function topLevelHelp(): string {
  const rows: [string, string][] = [];
  for (const command of COMMANDS) {
    const group = command.name.split(" ")[0]!;
    if (group in GROUPS) {
      if (!rows.some(([name]) => name === group)) rows.push([group, GROUPS[group]!]);
    } else rows.push([command.name, command.summary]);
  }
  return [
    "Usage: buildkit-node COMMAND [FLAGS]",
    "",
    "Builds with BuildKit from Node.js: any buildkitd, the BuildKit inside dockerd, or Depot.",
    "",
    "Commands:",
    ...rows.map(([name, summary]) => `  ${name.padEnd(13)}${summary}`),
    "",
    "Flags:",
    "  -h, --help     Show help (also: buildkit-node COMMAND --help)",
    "      --version  Show the version",
    "",
    "Environment: BUILDKIT_HOST (+ BUILDKIT_TLS_CA, BUILDKIT_TLS_CERT, BUILDKIT_TLS_KEY, BUILDKIT_TLS_SERVER_NAME),",
    "BUILDKIT_PROGRESS, NO_COLOR, DEBUG=buildkit-node:*.",
    "",
  ].join("\n");
}

function groupHelp(group: string): string {
  const commands = COMMANDS.filter((c) => c.name.startsWith(`${group} `));
  return [
    `Usage: buildkit-node ${group} COMMAND [FLAGS]`,
    "",
    `${GROUPS[group]}.`,
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.slice(group.length + 1).padEnd(8)}${c.summary}`),
    "",
    `Run 'buildkit-node ${group} COMMAND --help' for a command's flags.`,
    "",
  ].join("\n");
}

function subcommands(group: string): string[] {
  return COMMANDS.filter((c) => c.name.startsWith(`${group} `)).map((c) => c.name.slice(group.length + 1));
}

function suggestion(word: string): string {
  const names = [...new Set(COMMANDS.map((c) => c.name.split(" ")[0]!))];
  const close = names.find((name) => distance(name, word) <= 2);
  return close ? ` (did you mean "${close}"?)` : "";
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}
