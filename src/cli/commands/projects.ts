import { helpFlag, type ParsedArgs } from "../args.js";
import type { CliContext } from "../context.js";
import type { Project } from "../../depot/index.js";
import { depotClient, depotFlags } from "../depot.js";
import { EXIT, UsageError } from "../errors.js";
import type { Command } from "./command.js";
import { formatTable } from "./table.js";

const jsonFlag = { json: { type: "boolean", description: "Print JSON" } } as const;
/** Where `projects create` puts a project without --region (Depot asks for one). */
const DEFAULT_REGION = "us-east-1";

export const projectsCommands: Command[] = [
  {
    name: "projects list",
    usage: "buildkit-node projects list [FLAGS]",
    summary: "List your Depot projects",
    description: "Lists the Depot projects the token can see.",
    maxPositionals: 0,
    flags: { ...jsonFlag, ...depotFlags, help: helpFlag },
    async run(args, ctx) {
      const projects = await depotClient(args, ctx).projects.list({ signal: ctx.signal });
      print(ctx, args, projects, () => projectTable(projects));
      return EXIT.ok;
    },
  },
  {
    name: "projects get",
    usage: "buildkit-node projects get [FLAGS] PROJECT_ID",
    summary: "Show one Depot project",
    description: "Shows a Depot project: its name, region, cache policy and hardware.",
    maxPositionals: 1,
    flags: { ...jsonFlag, ...depotFlags, help: helpFlag },
    async run(args, ctx) {
      const project = await depotClient(args, ctx).projects.get(required(args, "PROJECT_ID"), { signal: ctx.signal });
      print(ctx, args, project, () => projectTable([project]));
      return EXIT.ok;
    },
  },
  {
    name: "projects create",
    usage: "buildkit-node projects create [FLAGS] NAME",
    summary: "Create a Depot project",
    description: "Creates a Depot project and prints it.",
    maxPositionals: 1,
    flags: {
      region: { type: "string", value: "REGION", description: `Region (default "${DEFAULT_REGION}")` },
      "keep-gb": { type: "string", value: "GB", description: "Cache policy: keep this many GB of cache" },
      "keep-days": { type: "string", value: "DAYS", description: "Cache policy: keep cache used in this many days" },
      ...jsonFlag,
      ...depotFlags,
      help: helpFlag,
    },
    async run(args, ctx) {
      const name = required(args, "NAME");
      const keepGb = positiveInteger(args, "keep-gb");
      const keepDays = positiveInteger(args, "keep-days");
      if ((keepGb === undefined) !== (keepDays === undefined)) throw new UsageError("--keep-gb and --keep-days go together", args.command);
      const project = await depotClient(args, ctx).projects.create(
        {
          name,
          regionId: args.string("region") || DEFAULT_REGION,
          ...(keepGb !== undefined && keepDays !== undefined ? { cachePolicy: { keepGb, keepDays } } : {}),
        },
        { signal: ctx.signal },
      );
      print(ctx, args, project, () => projectTable([project]));
      return EXIT.ok;
    },
  },
  {
    name: "projects delete",
    usage: "buildkit-node projects delete [FLAGS] PROJECT_ID",
    summary: "Delete a Depot project",
    description: "Deletes a Depot project and its cache.",
    maxPositionals: 1,
    flags: { ...depotFlags, help: helpFlag },
    async run(args, ctx) {
      const projectId = required(args, "PROJECT_ID");
      await depotClient(args, ctx).projects.delete(projectId, { signal: ctx.signal });
      ctx.stderr.write(`deleted project ${projectId}\n`);
      return EXIT.ok;
    },
  },
];

function required(args: ParsedArgs, what: string): string {
  const value = args.positionals[0];
  if (!value) throw new UsageError(`"${args.command}" needs ${what}`, args.command);
  return value;
}

function positiveInteger(args: ParsedArgs, flag: string): number | undefined {
  const value = args.string(flag);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${flag} must be a positive whole number, not "${value}"`, args.command);
  return n;
}

function print(ctx: CliContext, args: ParsedArgs, value: unknown, table: () => string): void {
  ctx.stdout.write(args.boolean("json") ? `${JSON.stringify(value, null, 2)}\n` : table());
}

function projectTable(projects: Project[]): string {
  return formatTable(
    ["PROJECT ID", "NAME", "REGION", "CACHE POLICY", "CREATED"],
    projects.map((p) => [
      p.projectId,
      p.name,
      p.regionId,
      `${p.cachePolicy.keepGb} GB, ${p.cachePolicy.keepDays} days`,
      p.createdAt.toISOString(),
    ]),
  );
}
