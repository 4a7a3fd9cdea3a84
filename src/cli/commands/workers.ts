import { helpFlag, type ParsedArgs } from "../args.js";
import { connectFromFlags, connectionFlags } from "../builder.js";
import type { CliContext } from "../context.js";
import { EXIT } from "../errors.js";
import type { Command } from "./command.js";
import { formatTable } from "./table.js";

export const workersCommand: Command = {
  name: "workers",
  usage: "buildkit-node workers [FLAGS]",
  summary: "List the builder's workers and their platforms",
  description: "Lists the workers of a BuildKit daemon: their IDs, platforms and, with --json, labels.",
  maxPositionals: 0,
  flags: {
    json: { type: "boolean", description: "Print JSON (an array of { id, platforms, labels, buildkitVersion? })" },
    ...connectionFlags,
    help: helpFlag,
  },
  async run(args: ParsedArgs, ctx: CliContext): Promise<number> {
    const client = await connectFromFlags(args, ctx);
    try {
      const workers = await client.listWorkers({ signal: ctx.signal });
      if (args.boolean("json")) {
        ctx.stdout.write(`${JSON.stringify(workers, null, 2)}\n`);
        return EXIT.ok;
      }
      const withVersion = workers.some((w) => w.buildkitVersion);
      const header = ["ID", "PLATFORMS", ...(withVersion ? ["BUILDKIT"] : [])];
      const rows = workers.map((w) => [w.id, w.platforms.join(", "), ...(withVersion ? [w.buildkitVersion?.version ?? ""] : [])]);
      ctx.stdout.write(`Builder: ${client.address}\n\n${formatTable(header, rows)}`);
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
