// Small helpers for the end-to-end build tests.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BuildEvent } from "../../src/buildkit/events.js";
import type { BuildResult, BuildRun } from "../../src/index.js";

/** Runs a build to its end, collecting every event; rethrows the build's error. */
export async function runCollecting<R extends BuildResult>(run: BuildRun<R>): Promise<{ result: R; events: BuildEvent[] }> {
  const events: BuildEvent[] = [];
  const consumed = (async () => {
    for await (const event of run.events) events.push(event);
  })();
  try {
    const result = await run;
    return { result, events };
  } finally {
    await consumed;
  }
}

/** Collects the events of a build that is expected to fail; returns its error. */
export async function failureOf<R extends BuildResult>(run: BuildRun<R>): Promise<{ error: unknown; events: BuildEvent[] }> {
  const events: BuildEvent[] = [];
  const consumed = (async () => {
    for await (const event of run.events) events.push(event);
  })();
  const error = await run.then(
    () => new Error("the build succeeded"),
    (err: unknown) => err,
  );
  await consumed;
  return { error, events };
}

/** A temp dir removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `bkn-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function logLines(events: BuildEvent[]): string[] {
  return events.flatMap((e) => (e.type === "log" ? [e.line] : []));
}
