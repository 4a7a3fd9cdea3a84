// depot.core.v1.OrganizationService: the one organization a local Depot has.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { OrganizationService } from "../../gen/depot/core/v1/org_pb.js";
import type { DepotContext } from "./context.js";

export function organizationService(depot: DepotContext, createdAt: Date): ServiceImpl<typeof OrganizationService> {
  return {
    listOrganizations(_req, ctx) {
      depot.auth.organization(ctx);
      return {
        organizations: [{ orgId: depot.store.organizationId, name: depot.organizationName, createdAt: timestampFromDate(createdAt) }],
      };
    },
  };
}
