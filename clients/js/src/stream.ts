/**
 * A named, bounded stream of pushed items: listeners (`on`) get every item as it arrives, and the items are
 * also queued for `next()` and `for await` readers, up to `limit` (the oldest is dropped past it, counted in
 * `dropped`). A `limit` of 0 keeps no queue: listeners only.
 */
import { TimeoutError } from "./errors.js";

export type Listener<T> = (item: T) => void;

export class Stream<T> {
  private readonly queue: T[] = [];
  private readonly waiters: Array<(item: T) => void> = [];
  private readonly listeners = new Set<Listener<T>>();
  /** Items dropped because the queue was full. */
  dropped = 0;

  constructor(
    readonly name: string,
    readonly limit: number,
  ) {}

  /** Delivers an item: to every listener, then to the oldest waiting `next()` or the queue. */
  push(item: T): void {
    for (const fn of [...this.listeners]) {
      try {
        fn(item);
      } catch (err) {
        queueMicrotask(() => {
          throw err; // a listener's bug surfaces as an uncaught error, and does not stop the client
        });
      }
    }
    const waiter = this.waiters.shift();
    if (waiter !== undefined) return waiter(item);
    if (this.limit <= 0) return;
    if (this.queue.length >= this.limit) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push(item);
  }

  /** Calls `fn` with every later item; returns the function that stops it. */
  on(fn: Listener<T>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** How many items are queued. */
  get size(): number {
    return this.queue.length;
  }

  /** The next queued item, or the next to arrive; rejects with `TimeoutError` after `timeoutMs`. */
  next(timeoutMs = 10_000): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    return new Promise<T>((resolve, reject) => {
      const waiter = (item: T): void => {
        clearTimeout(timer);
        resolve(item);
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new TimeoutError(`no ${this.name} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Every item, forever (until the loop is left). */
  async *[Symbol.asyncIterator](): AsyncGenerator<T, never, undefined> {
    for (;;) {
      if (this.queue.length > 0) yield this.queue.shift() as T;
      else yield await new Promise<T>((resolve) => this.waiters.push(resolve));
    }
  }
}
