import { parseArgs } from "node:util";
import { UsageError } from "./errors.js";

/** One flag of a command. Names are long names without `--`. */
export interface FlagSpec {
  type: "string" | "boolean";
  short?: string;
  /** May be given more than once; the values are kept in order. */
  multiple?: boolean;
  /** The value's placeholder in `--help`, e.g. `PATH`. */
  value?: string;
  description: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

/** The flags and positional arguments of one command line. */
export class ParsedArgs {
  constructor(
    readonly command: string,
    private readonly values: Record<string, string | boolean | (string | boolean)[] | undefined>,
    readonly positionals: string[],
  ) {}

  /** The last value of a string flag. */
  string(name: string): string | undefined {
    const value = this.values[name];
    const last = Array.isArray(value) ? value.at(-1) : value;
    return typeof last === "string" ? last : undefined;
  }

  /** Every value of a repeatable string flag. */
  strings(name: string): string[] {
    const value = this.values[name];
    const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
    return list.filter((v): v is string => typeof v === "string");
  }

  boolean(name: string): boolean {
    return this.values[name] === true;
  }

  has(name: string): boolean {
    return this.values[name] !== undefined;
  }
}

export const helpFlag: FlagSpec = { type: "boolean", short: "h", description: "Show this help" };

/**
 * Parses `argv` (the words after the command's name) against `specs` with
 * node:util's parseArgs: long and short flags, `--flag=value`, repeatable
 * flags, `--` ends the flags. Boolean flags also take `--flag=true|false`,
 * as Go CLIs do. Throws UsageError naming the flag.
 */
export function parseCommandLine(command: string, argv: string[], specs: FlagSpecs, maxPositionals: number): ParsedArgs {
  const booleans = new Set(Object.entries(specs).filter(([, spec]) => spec.type === "boolean").map(([name]) => name));
  const args: string[] = [];
  for (const [i, arg] of argv.entries()) {
    if (arg === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const match = /^--([^=]+)=(.*)$/s.exec(arg);
    if (match && booleans.has(match[1]!)) {
      const value = match[2]!.toLowerCase();
      if (value === "true" || value === "1") args.push(`--${match[1]}`);
      else if (value !== "false" && value !== "0") throw new UsageError(`--${match[1]} takes no value, or true/false (got "${match[2]}")`, command);
      continue;
    }
    args.push(arg);
  }

  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      options: Object.fromEntries(
        Object.entries(specs).map(([name, spec]) => [name, { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) }]),
      ),
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(parseArgsMessage(err, specs), command);
  }
  if (parsed.positionals.length > maxPositionals) {
    const extra = parsed.positionals.slice(maxPositionals);
    throw new UsageError(
      maxPositionals === 0 ? `"${command}" takes no arguments (got "${extra.join(" ")}")` : `too many arguments: "${extra.join(" ")}"`,
      command,
    );
  }
  return new ParsedArgs(command, parsed.values as Record<string, string | boolean | (string | boolean)[] | undefined>, parsed.positionals);
}

/** parseArgs' messages, shortened to the flag (`-t/--tag`) and what is wrong with it. */
function parseArgsMessage(err: unknown, specs: FlagSpecs): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: string }).code;
  const given = /'(-[^',]+)/.exec(message)?.[1];
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" && given) return `unknown flag: ${given}`;
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && given) {
    const name = given.startsWith("--") ? given.slice(2) : Object.entries(specs).find(([, s]) => s.short === given.slice(1))?.[0];
    const spec = name ? specs[name] : undefined;
    const flag = spec?.short && name ? `-${spec.short}/--${name}` : given;
    if (spec?.type === "boolean") return `${flag} takes no value`;
    if (/ambiguous/.test(message)) return `${flag} needs a value; to pass one that starts with "-", write --${name ?? "FLAG"}=VALUE`;
    return `${flag} needs a value${spec?.value ? ` (${spec.value})` : ""}`;
  }
  return message.split("\n")[0] ?? message;
}

/** Help text: usage line, description, then the flags in a table. */
export function helpText(usage: string, description: string, specs: FlagSpecs, footer?: string): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const names = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${spec.type === "string" ? ` ${spec.value ?? "string"}` : ""}`;
    return [names, `${spec.description}${spec.multiple ? " (repeatable)" : ""}`] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([names]) => names.length)) + 2);
  const lines = [`Usage: ${usage}`, "", ...wrap(description, HELP_WIDTH), "", "Flags:"];
  const indent = " ".repeat(width + 2);
  for (const [names, text] of rows) {
    const wrapped = wrap(text, Math.max(30, HELP_WIDTH - width - 2)).join(`\n${indent}`);
    lines.push(names.length + 2 > width ? `  ${names}\n${indent}${wrapped}` : `  ${names.padEnd(width)}${wrapped}`);
  }
  if (footer) lines.push("", footer);
  return `${lines.join("\n")}\n`;
}

const HELP_WIDTH = 100;

/** Splits `text` into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}
