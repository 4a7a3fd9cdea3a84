/** The `code` of a Node system error (`ENOENT`, `EACCES`…): what a message may say of a failed read, never more. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err && typeof err.code === "string" ? err.code : undefined;
}
