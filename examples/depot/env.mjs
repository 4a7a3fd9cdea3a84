// Where the Depot examples run: Depot itself when DEPOT_TOKEN is set
// (DEPOT_API_URL optional), else a local Depot-compatible server started in
// this process, fronting the local BuildKit with real mTLS machines:
// BUILDKIT_HOST (with BUILDKIT_TLS_CA/CERT/KEY/SERVER_NAME, as buildctl reads
// them) when set, so the image exporter, push by digest and attestations of a
// current buildkitd run in the Depot flow too; else dockerd's.
import { readFileSync } from "node:fs";
import { DepotClient } from "buildkit-node/depot";
import { startLocalDepot } from "buildkit-node/testing";

/** The BuildKit behind the local Depot's machines, from the environment. */
export function localBuildKit(env = process.env) {
  if (!env.BUILDKIT_HOST) return { buildkit: "docker://" };
  const file = (name) => (env[name] ? readFileSync(env[name], "utf8") : undefined);
  const tls = {
    ca: file("BUILDKIT_TLS_CA"),
    cert: file("BUILDKIT_TLS_CERT"),
    key: file("BUILDKIT_TLS_KEY"),
    serverName: env.BUILDKIT_TLS_SERVER_NAME || undefined,
  };
  const given = Object.fromEntries(Object.entries(tls).filter(([, value]) => value !== undefined));
  return { buildkit: env.BUILDKIT_HOST, ...(Object.keys(given).length > 0 ? { buildkitTls: given } : {}) };
}

export async function openDepot() {
  if (process.env.DEPOT_TOKEN) {
    return { depot: new DepotClient(), where: process.env.DEPOT_API_URL ?? "https://api.depot.dev", close: async () => {} };
  }
  const backend = localBuildKit();
  const local = await startLocalDepot(backend);
  return {
    // Machines fronting dockerd push through its Engine: the client is told which (undefined otherwise).
    depot: new DepotClient({ token: local.token, apiUrl: local.apiUrl, dockerEngine: local.dockerEngine }),
    where: `a local Depot-compatible server at ${local.apiUrl} on ${backend.buildkit}`,
    close: () => local.stop(),
  };
}

/** DEPOT_PROJECT_ID, or (against the local server) a project made for the example. */
export async function projectFor(depot, name) {
  if (process.env.DEPOT_PROJECT_ID) return process.env.DEPOT_PROJECT_ID;
  const project = await depot.projects.create({ name, regionId: "us-east-1" });
  return project.projectId;
}

/** Prints a build's progress one line per step. */
export async function printProgress(events) {
  for await (const event of events) {
    const where = event.platform ? `[${event.platform}] ` : "";
    if (event.type === "vertex.started") console.log(`${where}${event.name}`);
    if (event.type === "vertex.cached") console.log(`${where}${event.name} CACHED`);
    if (event.type === "log") console.log(`${where}  │ ${event.line}`);
    if (event.type === "vertex.errored") console.log(`${where}${event.name} ERROR ${event.error}`);
  }
}
