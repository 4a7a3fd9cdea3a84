/**
 * Time as the Depot client's timers see it: the system's by default, a
 * test's manual clock in the timing tests, so that "one report per interval"
 * is asserted exactly rather than counted in wall-clock windows.
 */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): ClockTimer;
  clearTimeout(timer: ClockTimer | undefined): void;
}

/** What `Clock.setTimeout` returns; opaque to its users. */
export type ClockTimer = { readonly __clockTimer: never } | NodeJS.Timeout;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
};
