import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BuildOptions, ContextInput } from "./build-options.js";

/** The streams a hold made: taken in hand already. */
const heldStreams = new WeakSet<Readable>();

/**
 * Takes every `{ tar: Readable }` context of `options` in hand at once,
 * piping it into a stream the build holds: call it in the same tick the
 * options are received, before anything is awaited. A child process's
 * stdout, say, must be read before the child exits, or Node resumes (and so
 * discards) whatever of its output nobody reads. `release()` ends the hold
 * once the build has settled, which destroys an upload it never read (a
 * refused build). Other contexts pass as they are.
 */
export function takeContextsInHand<T extends BuildOptions>(options: T): { options: T; release(): void } {
  const holds: PassThrough[] = [];
  const hold = (input: ContextInput): ContextInput => {
    if (typeof input !== "object" || !("tar" in input) || !(input.tar instanceof Readable)) return input;
    // Already in hand (a Depot machine's build holds it before it connects, then builds with it):
    // its holder releases it; a second hold would only pipe every chunk once more.
    if (heldStreams.has(input.tar)) return input;
    const held = new PassThrough();
    heldStreams.add(held);
    // Errors reach whoever reads `held`; destroying `held` destroys the upload.
    pipeline(input.tar, held).catch(() => {});
    holds.push(held);
    return { tar: held };
  };
  const extraContexts = options.extraContexts
    ? Object.fromEntries(Object.entries(options.extraContexts).map(([name, input]) => [name, hold(input)]))
    : undefined;
  return {
    options: { ...options, context: hold(options.context), ...(extraContexts ? { extraContexts } : {}) },
    release: () => holds.forEach((held) => held.destroy()),
  };
}
