// Page sizes as Depot's list calls take them: 0 or unset means 30, at most 100.
import { Code, ConnectError } from "@connectrpc/connect";

export const DEFAULT_PAGE_SIZE = 30;
export const MAX_PAGE_SIZE = 100;

export function pageSize(requested: number | undefined): number {
  if (requested === undefined || requested === 0) return DEFAULT_PAGE_SIZE;
  if (requested < 0) throw new ConnectError(`page_size must not be negative, got ${requested}`, Code.InvalidArgument);
  return Math.min(requested, MAX_PAGE_SIZE);
}

/** What a list call answers to a page token it did not hand out. */
export function invalidPageToken(): ConnectError {
  return new ConnectError("invalid page_token", Code.InvalidArgument);
}

/**
 * A page of a list that only grows (a build's steps, a step's logs): the
 * token is the offset of the next item. A token not ours is refused.
 */
export function pageByOffset<T>(items: readonly T[], size: number, token: string | undefined): { items: T[]; nextToken?: string } {
  let start = 0;
  if (token) {
    const match = /^offset:(\d+)$/.exec(Buffer.from(token, "base64url").toString());
    if (!match) throw invalidPageToken();
    start = Number(match[1]);
  }
  const end = start + size;
  return { items: items.slice(start, end), ...(end < items.length ? { nextToken: Buffer.from(`offset:${end}`).toString("base64url") } : {}) };
}
