// Page sizes as Depot's list calls take them: 0 or unset means 30, at most 100.
import { Code, ConnectError } from "@connectrpc/connect";

export const DEFAULT_PAGE_SIZE = 30;
export const MAX_PAGE_SIZE = 100;

export function pageSize(requested: number | undefined): number {
  if (requested === undefined || requested === 0) return DEFAULT_PAGE_SIZE;
  if (requested < 0) throw new ConnectError(`page_size must not be negative, got ${requested}`, Code.InvalidArgument);
  return Math.min(requested, MAX_PAGE_SIZE);
}
