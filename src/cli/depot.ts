// The Depot side of the command. Both functions below are the plug points:
// the Depot orchestration replaces their bodies, and nothing else in the
// command needs to change.
import type { FlagSpecs, ParsedArgs } from "./args.js";
import type { Builder } from "./builder.js";
import type { CliContext } from "./context.js";
import { NotAvailableError } from "./errors.js";

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
export async function openDepotBuilder(projectId: string, _args: ParsedArgs, _ctx: CliContext): Promise<Builder> {
  throw new NotAvailableError(
    `building on Depot (--depot ${projectId}) is not available in this version of buildkit-node yet; ` +
      "build on a BuildKit daemon instead (--builder ADDRESS, or BUILDKIT_HOST)",
  );
}

/** A Depot project, with Depot's field names. */
export interface DepotProject {
  projectId: string;
  organizationId: string;
  name: string;
  regionId: string;
  createdAt?: Date;
  cachePolicy?: { keepGb: number; keepDays: number };
  hardware?: string;
}

export interface DepotProjectInput {
  name: string;
  regionId?: string;
  cachePolicy?: { keepGb: number; keepDays: number };
}

/** What `projects …` needs from Depot's API. */
export interface DepotProjects {
  list(): Promise<DepotProject[]>;
  get(projectId: string): Promise<DepotProject>;
  create(input: DepotProjectInput): Promise<DepotProject>;
  delete(projectId: string): Promise<void>;
}

/** Depot's projects API for `projects …`, with the token from `--token` or DEPOT_TOKEN. */
export async function openDepotProjects(_args: ParsedArgs, _ctx: CliContext): Promise<DepotProjects> {
  throw new NotAvailableError("Depot projects are not available in this version of buildkit-node yet");
}
