// The Depot side of the command: builds on Depot machines, and projects.
import { DepotClient } from "../depot/index.js";
import type { FlagSpecs, ParsedArgs } from "./args.js";
import { type Builder, dockerEngineFromFlags } from "./builder.js";
import type { CliContext } from "./context.js";

/** Flags every Depot call takes. The token itself is never printed. */
export const depotFlags: FlagSpecs = {
  token: { type: "string", value: "TOKEN", description: "Depot API token (default: $DEPOT_TOKEN)" },
};

/**
 * `build --depot PROJECT_ID`: a builder that runs each build on Depot
 * (register the build, acquire a machine per platform, build, finish,
 * release). `run(options)` gets the same BuildOptions a BuildKit builder
 * does, platforms included.
 */
export async function openDepotBuilder(projectId: string, args: ParsedArgs, ctx: CliContext): Promise<Builder> {
  // --docker-engine: only for a Depot whose machines are a dockerd's BuildKit (a local Depot fronting docker://).
  const depot = depotClient(args, ctx, dockerEngineFromFlags(args));
  const save = args.boolean("save");
  const saveTags = args.strings("save-tag");
  // Depot's SDK hands a build it created to the CLI this way.
  const buildId = ctx.env.DEPOT_BUILD_ID;
  const token = args.string("token") || ctx.env.DEPOT_TOKEN;
  const build = buildId ? await depot.builds.get(buildId, { ...(token ? { token } : {}), signal: ctx.signal }) : undefined;
  return {
    name: build ? `depot build ${build.id}` : `depot project ${projectId}`,
    run: (options) => depot.build({ ...options, ...(build ? { build } : { projectId }), ...(save ? { save, saveTags } : {}) }),
    close: async () => {},
  };
}

/** Depot's API with the token from `--token` or DEPOT_TOKEN, and DEPOT_API_URL. */
export function depotClient(args: ParsedArgs, ctx: CliContext, dockerEngine?: string): DepotClient {
  const token = args.string("token") || ctx.env.DEPOT_TOKEN;
  const apiUrl = ctx.env.DEPOT_API_URL;
  return new DepotClient({ ...(token ? { token } : {}), ...(apiUrl ? { apiUrl } : {}), ...(dockerEngine ? { dockerEngine } : {}) });
}
