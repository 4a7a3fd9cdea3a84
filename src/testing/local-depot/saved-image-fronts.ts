// The saved-image registry's fronts: the usual one on a free port of
// 127.0.0.1, and on request a second one answering as Depot's own registry,
// registry.depot.dev (where the depot CLI saves a build it picked up by id).
// Both stand before one real registry with one set of access rules and
// records (SavedImageAccess); each names its records by its own host.
import { DEPOT_REGISTRY } from "../../depot/saved-image.js";
import { basicAuthorization } from "../../registry/authorizer.js";
import type { CertificateAuthority } from "../certificates.js";
import { type AccessDecision, type RegistryFront, type RegistryRequest, startRegistryFront } from "../registry-front.js";
import type { SavedImagesContext } from "./context.js";
import { SavedImageAccess, type SaveListener } from "./saved-images.js";
import type { DepotStore } from "./store.js";

export interface SavedImageFrontsOptions {
  /** The registry behind the fronts, `host:port`, plain HTTP. */
  registry: string;
  /** Credentials the fronts send to it, if it needs them. */
  registryAuth: { username: string; password: string } | undefined;
  /** The port of the registry.depot.dev front (0: any free one); none without it. */
  depotRegistryPort: number | undefined;
  onImageSaved: SaveListener | undefined;
  /** Issues the fronts' HTTPS certificates. */
  authority: CertificateAuthority;
  store: DepotStore;
  organizationToken: string;
  /** Given each front's stop as soon as it listens, so that a later failure can stop it. */
  started: (stop: () => Promise<void>) => void;
}

export interface SavedImageFronts {
  context: SavedImagesContext;
  /** "registry.depot.dev" (port 80 or 443) or "registry.depot.dev:<port>", with the second front. */
  depotRegistry: string | undefined;
}

export async function startSavedImageFronts(options: SavedImageFrontsOptions): Promise<SavedImageFronts> {
  const { registry, registryAuth: auth, authority } = options;
  const upstreamAuthorization = auth ? basicAuthorization(auth.username, auth.password) : undefined;
  const access = new SavedImageAccess(options.store, options.organizationToken, options.onImageSaved);
  const authorize = (request: RegistryRequest): AccessDecision => {
    const decision = access.authorize(request);
    return decision.ok ? { ok: true, upstreamAuthorization } : decision;
  };
  /** A front whose records name it `host()` (known once it listens). */
  const frontOf = async (host: () => string, port: number | undefined, dnsNames: string[]): Promise<RegistryFront> => {
    const front = await startRegistryFront({
      registry,
      authority,
      realm: "local Depot registry",
      authorize,
      observe: access.observer(host),
      ...(port !== undefined ? { port } : {}),
      dnsNames,
    });
    options.started(() => front.stop());
    return front;
  };

  let host = "";
  host = (await frontOf(() => host, undefined, [])).host;
  let depotRegistry: string | undefined;
  if (options.depotRegistryPort !== undefined) {
    const alias = await frontOf(() => depotRegistry!, options.depotRegistryPort, [DEPOT_REGISTRY]);
    const port = Number(alias.host.slice(alias.host.lastIndexOf(":") + 1));
    depotRegistry = port === 80 || port === 443 ? DEPOT_REGISTRY : `${DEPOT_REGISTRY}:${port}`;
  }
  return { context: { host, upstream: registry, upstreamAuthorization, caCertificate: authority.cert }, depotRegistry };
}
