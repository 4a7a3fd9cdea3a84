// Where the Depot examples run: Depot itself when DEPOT_TOKEN is set
// (DEPOT_API_URL optional), else a local Depot-compatible server started in
// this process, fronting the local BuildKit (dockerd's by default, or
// BUILDKIT_HOST with BUILDKIT_TLS_* as buildctl reads them) with real mTLS
// machines.
import { readFileSync } from "node:fs";
import { DepotClient } from "buildkit-node/depot";
import { startLocalDepot } from "buildkit-node/testing";

/** The BuildKit behind the local Depot's machines. */
function localBuildKit(env = process.env) {
  if (!env.BUILDKIT_HOST) return { buildkit: "docker://" };
  const read = (name) => (env[name] ? { [name.slice("BUILDKIT_TLS_".length).toLowerCase()]: readFileSync(env[name], "utf8") } : {});
  const tls = { ...read("BUILDKIT_TLS_CA"), ...read("BUILDKIT_TLS_CERT"), ...read("BUILDKIT_TLS_KEY") };
  if (env.BUILDKIT_TLS_SERVER_NAME) tls.serverName = env.BUILDKIT_TLS_SERVER_NAME;
  return { buildkit: env.BUILDKIT_HOST, ...(Object.keys(tls).length > 0 ? { buildkitTls: tls } : {}) };
}

export async function openDepot() {
  if (process.env.DEPOT_TOKEN) {
    return { depot: new DepotClient(), where: process.env.DEPOT_API_URL ?? "https://api.depot.dev", close: async () => {} };
  }
  const local = await startLocalDepot(localBuildKit());
  // A local Depot fronting dockerd: images built there are pushed through that dockerd's Engine.
  return { depot: new DepotClient({ token: local.token, apiUrl: local.apiUrl, dockerEngine: local.dockerEngine }), where: `a local Depot-compatible server at ${local.apiUrl}`, close: () => local.stop() };
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
