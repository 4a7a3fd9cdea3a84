import { BuildKitNodeError } from "../errors.js";

/**
 * A single-consumer async queue: producers push, the consumer iterates, and
 * iteration ends after `end()` once everything pushed was taken. Items pushed
 * before anyone iterates are kept, so a late consumer misses nothing (a
 * build's events are bounded: BuildKit caps each step's log at 2 MiB).
 */
export class EventQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #head = 0;
  #wake: (() => void) | undefined;
  #ended = false;
  #taken = false;

  push(item: T): void {
    if (this.#ended) return;
    this.#items.push(item);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#taken) throw new BuildKitNodeError("FAILED_PRECONDITION", "build events can be iterated once");
    this.#taken = true;
    for (;;) {
      if (this.#head < this.#items.length) {
        const item = this.#items[this.#head++]!;
        // Drop what was taken now and then, rather than shifting each time.
        if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
          this.#items = this.#items.slice(this.#head);
          this.#head = 0;
        }
        yield item;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}
