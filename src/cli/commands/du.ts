import type { UsageRecord } from "../../index.js";
import { helpFlag, type ParsedArgs } from "../args.js";
import { connectFromFlags, connectionFlags } from "../builder.js";
import type { CliContext } from "../context.js";
import { EXIT } from "../errors.js";
import { formatBytes } from "../../progress/format.js";
import type { Command } from "./command.js";
import { formatTable, timeAgo } from "./table.js";

export const duCommand: Command = {
  name: "du",
  usage: "buildkit-node du [FLAGS]",
  summary: "Show the builder's cache disk usage",
  description: "Lists the build cache records of a BuildKit daemon, largest first, with totals.",
  maxPositionals: 0,
  flags: {
    filter: { type: "string", multiple: true, value: "FILTER", description: "Only records matching, e.g. type==regular" },
    json: { type: "boolean", description: "Print JSON (an array of records; sizes in bytes, dates as ISO strings)" },
    ...connectionFlags,
    help: helpFlag,
  },
  async run(args: ParsedArgs, ctx: CliContext): Promise<number> {
    const client = await connectFromFlags(args, ctx);
    try {
      const records = await client.diskUsage({ filter: args.strings("filter"), signal: ctx.signal });
      if (args.boolean("json")) {
        ctx.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
        return EXIT.ok;
      }
      ctx.stdout.write(usageReport(records));
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

/** The table and totals `du` prints: records largest first. */
function usageReport(records: UsageRecord[], now = Date.now()): string {
  const sorted = [...records].sort((a, b) => b.size - a.size);
  const rows = sorted.map((r) => [
    r.id,
    r.inUse ? "false" : "true",
    formatBytes(r.size),
    r.inUse ? "in use" : timeAgo(r.lastUsedAt ?? r.createdAt, now),
    r.description.length > 60 ? `${r.description.slice(0, 59)}…` : r.description,
  ]);
  const sum = (pick: (r: UsageRecord) => boolean) => records.filter(pick).reduce((total, r) => total + r.size, 0);
  const totals: [string, number][] = [
    ...(records.some((r) => r.shared) ? ([["Shared:", sum((r) => r.shared)]] as [string, number][]) : []),
    ["Private:", sum((r) => !r.shared)],
    ["Reclaimable:", sum((r) => !r.inUse)],
    ["Total:", sum(() => true)],
  ];
  const table = records.length > 0 ? `${formatTable(["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED", "DESCRIPTION"], rows)}\n` : "No build cache records.\n\n";
  return `${table}${totals.map(([label, size]) => `${label.padEnd(14)}${formatBytes(size)}`).join("\n")}\n`;
}
