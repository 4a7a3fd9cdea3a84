// A clock that moves only when a test says so, for the Depot client's timers
// (health reports, cancels_at, status batches): "one report per interval" is
// then asserted exactly, with no wall-clock windows.
import type { Clock, ClockTimer } from "../../src/depot/clock.js";

interface Timer {
  at: number;
  seq: number;
  callback: () => void;
}

export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Set<Timer>();

  constructor(start = Date.now()) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): ClockTimer {
    const timer: Timer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, callback };
    this.#timers.add(timer);
    return timer as unknown as ClockTimer;
  }

  clearTimeout(timer: ClockTimer | undefined): void {
    if (timer) this.#timers.delete(timer as unknown as Timer);
  }

  /** Timers waiting to fire. */
  pending(): number {
    return this.#timers.size;
  }

  /** Moves time forward by `ms`, firing each timer that comes due, in order (with a turn of the event loop after each). */
  async advance(ms: number): Promise<void> {
    const until = this.#now + ms;
    for (;;) {
      const next = [...this.#timers].filter((t) => t.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.#timers.delete(next);
      this.#now = next.at;
      next.callback();
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.#now = until;
  }
}
