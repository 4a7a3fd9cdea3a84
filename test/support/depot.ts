// The local Depot in front of one of the test daemons, and a DepotClient for
// it, as the Depot end-to-end tests use them.
import { DepotClient } from "../../src/depot/index.js";
import type { DepotClientInternalOptions } from "../../src/depot/depot-client.js";
import { type LocalDepot, startLocalDepot } from "../../src/testing/index.js";
import { assertDaemon, type BuildDaemon } from "./daemons.js";

export interface DepotOnDaemon {
  local: LocalDepot;
  depot: DepotClient;
  projectId: string;
}

/** Starts a local Depot whose machines front `daemon`, with a project of `projectName` and a client (health every 250 ms). */
export async function depotOn(daemon: BuildDaemon, projectName: string): Promise<DepotOnDaemon> {
  assertDaemon(daemon);
  const local = await startLocalDepot({ ...daemon.backend, pendingWaitMs: 50 });
  // Machines fronting dockerd push through its Engine: the client is told which (undefined for buildkitd).
  const options: DepotClientInternalOptions = { token: local.token, apiUrl: local.apiUrl, healthIntervalMs: 250, dockerEngine: local.dockerEngine };
  return { local, depot: new DepotClient(options), projectId: local.addProject({ name: projectName }).projectId };
}
