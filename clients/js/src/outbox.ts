/**
 * The outbox: messages written while offline (or while a send is in flight) are kept in a store before they
 * are sent, and sent once, in the order they were written, whenever the client is connected, even after a
 * page reload: an entry keeps its `cmid` from the moment it is written, so a retry of something the server
 * already stored gets the original ack (`duplicate: true`) and nothing is stored twice.
 *
 * The store is a small port ({@link OutboxStore}) with two adapters: {@link IndexedDbOutboxStore} (browsers;
 * survives reloads) and {@link MemoryOutboxStore} (Node, tests; lives as long as the object).
 *
 * What it does not guarantee: the server recognises a `cmid` for `idempotency_window_s` (300 s by default)
 * after it stored it. An entry whose first attempt is older than `idempotencyWindowMs` is first looked for in
 * the conversation's recent history (by sender and `cmid`) and only sent again when not found there.
 */
import { FlareError } from "./errors.js";
import type { Ack, Body } from "./frames.js";
import { Stream } from "./stream.js";

export interface OutboxEntry {
  /** The idempotency key, fixed when the entry is written. */
  cmid: string;
  conv: string;
  kind: string;
  body: Body;
  /** Epoch ms when it was written. */
  createdAt: number;
  /** Sending order (increasing). */
  order: number;
  /** The user it is sent as (set at its first attempt; `""` until then). */
  user: string;
  /** Epoch ms of the first time it was put on the wire (0: never). */
  firstAttemptAt: number;
  /** Set when the server refused it for good (a non-retryable error): it stays until retried or discarded. */
  error: { code: number; message: string } | null;
}

/** Where outbox entries are kept. Each call is atomic; `list` returns entries in `order`. */
export interface OutboxStore {
  list(): Promise<OutboxEntry[]>;
  /** Adds or replaces the entry with the same `cmid`. */
  put(entry: OutboxEntry): Promise<void>;
  delete(cmid: string): Promise<void>;
}

/** Entries in memory: a Node process, tests, or a browser without IndexedDB (private modes). */
export class MemoryOutboxStore implements OutboxStore {
  private readonly entries = new Map<string, OutboxEntry>();

  async list(): Promise<OutboxEntry[]> {
    return [...this.entries.values()].map((e) => structuredClone(e)).sort((a, b) => a.order - b.order);
  }

  async put(entry: OutboxEntry): Promise<void> {
    this.entries.set(entry.cmid, structuredClone(entry));
  }

  async delete(cmid: string): Promise<void> {
    this.entries.delete(cmid);
  }
}

/**
 * Entries in IndexedDB database `name` (object store `entries`, keyed by `cmid`): they survive reloads. Use
 * one database per user and device when a browser profile signs in as several users.
 */
export class IndexedDbOutboxStore implements OutboxStore {
  private db: Promise<IDBDatabase> | null = null;

  constructor(
    readonly name = "flare-outbox",
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise<IDBDatabase>((resolve, reject) => {
      const req = this.factory.open(this.name, 1);
      req.onupgradeneeded = () => {
        req.result.createObjectStore("entries", { keyPath: "cmid" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return this.db;
  }

  private async run<T>(mode: IDBTransactionMode, op: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.open();
    return new Promise<T>((resolve, reject) => {
      const tx = db.transaction("entries", mode);
      const req = op(tx.objectStore("entries"));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async list(): Promise<OutboxEntry[]> {
    const all = await this.run<OutboxEntry[]>("readonly", (s) => s.getAll());
    return all.sort((a, b) => a.order - b.order);
  }

  async put(entry: OutboxEntry): Promise<void> {
    await this.run("readwrite", (s) => s.put(entry));
  }

  async delete(cmid: string): Promise<void> {
    await this.run("readwrite", (s) => s.delete(cmid));
  }

  /** Closes the database connection (a later call opens it again). */
  async close(): Promise<void> {
    const db = this.db;
    this.db = null;
    if (db) (await db).close();
  }
}

/** IndexedDB where the runtime has it (browsers), else memory (Node). */
export function defaultOutboxStore(name = "flare-outbox"): OutboxStore {
  return typeof globalThis.indexedDB !== "undefined" ? new IndexedDbOutboxStore(name) : new MemoryOutboxStore();
}

/** What happened to an entry: written, sent (with its ack), or refused for good (with the error). */
export type OutboxEvent =
  | { type: "queued"; entry: OutboxEntry }
  | { type: "sent"; entry: OutboxEntry; ack: Ack }
  | { type: "failed"; entry: OutboxEntry; error: FlareError };

/** What the outbox needs of a client: who it is, whether it is connected, and two requests. */
export interface OutboxTransport {
  readonly user: string;
  readonly connected: boolean;
  /** Sends the entry with its `cmid`, retrying like `send`; the ack, or throws. */
  sendEntry(entry: OutboxEntry): Promise<Ack>;
  /** The entry's message if the server stored it (looked up in its conversation's recent history), else null. */
  findStored(entry: OutboxEntry): Promise<Ack | null>;
}

let lastOrder = 0;
const MAX_RESULTS = 1000; // outcomes kept for late `settled` calls

export class Outbox {
  /** Every change of an entry; `client.on("outbox", fn)` listens to it. */
  readonly events: Stream<OutboxEvent>;
  private flushing: Promise<void> | null = null;
  private again = false;
  private readonly waiters = new Map<string, Array<{ resolve: (ack: Ack) => void; reject: (err: Error) => void }>>();
  /** The outcomes of the latest entries, for a `settled` call that comes after them (bounded). */
  private readonly results = new Map<string, Ack | FlareError>();

  constructor(
    readonly store: OutboxStore,
    private readonly transport: OutboxTransport,
    private readonly idempotencyWindowMs: number,
    maxQueued: number,
  ) {
    this.events = new Stream<OutboxEvent>("outbox event", maxQueued);
  }

  /** Writes a message to the store (it is kept from now on), then sends it when connected. */
  async enqueue(conv: string, body: Body, kind: string, cmid: string): Promise<OutboxEntry> {
    lastOrder = Math.max(lastOrder + 1, Date.now() * 1000);
    const entry: OutboxEntry = {
      cmid,
      conv,
      kind,
      body,
      createdAt: Date.now(),
      order: lastOrder,
      user: "",
      firstAttemptAt: 0,
      error: null,
    };
    await this.store.put(entry);
    this.events.push({ type: "queued", entry });
    void this.flush();
    return entry;
  }

  /**
   * Resolves with the ack once the entry `cmid` is sent (at once if it was sent lately), rejects with the
   * `FlareError` if it is refused, and with a `TypeError` if the outbox holds no such entry.
   */
  async settled(cmid: string): Promise<Ack> {
    const waiting = new Promise<Ack>((resolve, reject) => {
      const list = this.waiters.get(cmid) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(cmid, list);
    });
    const known = this.results.get(cmid);
    if (known === undefined && !(await this.store.list()).some((e) => e.cmid === cmid && e.error === null)) {
      const late = this.results.get(cmid); // settled while the store was read
      for (const w of this.take(cmid)) {
        if (late === undefined) w.reject(new TypeError(`the outbox holds no entry ${cmid}`));
        else if (late instanceof FlareError) w.reject(late);
        else w.resolve(late);
      }
    } else if (known !== undefined) {
      for (const w of this.take(cmid)) {
        if (known instanceof FlareError) w.reject(known);
        else w.resolve(known);
      }
    }
    return waiting;
  }

  /** The entries not sent yet (including refused ones, with `error`), in order. */
  list(): Promise<OutboxEntry[]> {
    return this.store.list();
  }

  /** Clears a refused entry's error and sends it again (same `cmid`). */
  async retry(cmid: string): Promise<void> {
    const entry = (await this.store.list()).find((e) => e.cmid === cmid);
    if (entry === undefined) return;
    await this.store.put({ ...entry, error: null });
    await this.flush();
  }

  /** Removes an entry without sending it (it may already have been stored if it was attempted). */
  async discard(cmid: string): Promise<void> {
    await this.store.delete(cmid);
  }

  /** Sends every pending entry, one at a time in order, while connected. Concurrent calls share one pass. */
  flush(): Promise<void> {
    if (this.flushing !== null) {
      this.again = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      do {
        this.again = false;
        await this.drain();
      } while (this.again && this.transport.connected);
    })().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async drain(): Promise<void> {
    const user = this.transport.user;
    for (const entry of await this.store.list()) {
      if (!this.transport.connected) return;
      if (entry.error !== null || (entry.user !== "" && entry.user !== user)) continue;
      let ack: Ack | null = null;
      try {
        if (entry.firstAttemptAt && Date.now() - entry.firstAttemptAt > this.idempotencyWindowMs) {
          ack = await this.transport.findStored(entry);
          if (ack === null) entry.firstAttemptAt = 0; // never stored: a new first attempt
        }
        if (ack === null) {
          if (!entry.firstAttemptAt) {
            entry.firstAttemptAt = Date.now();
            entry.user = user;
            await this.store.put(entry);
          }
          ack = await this.transport.sendEntry(entry);
        }
      } catch (err) {
        if (!(err instanceof FlareError) || err.retryable) return; // offline again: the next connect resumes
        const failed = { ...entry, error: { code: err.code, message: err.message } };
        await this.store.put(failed);
        this.remember(entry.cmid, err);
        this.events.push({ type: "failed", entry: failed, error: err });
        for (const w of this.take(entry.cmid)) w.reject(err);
        continue;
      }
      await this.store.delete(entry.cmid);
      this.remember(entry.cmid, ack);
      this.events.push({ type: "sent", entry, ack });
      for (const w of this.take(entry.cmid)) w.resolve(ack);
    }
  }

  private remember(cmid: string, outcome: Ack | FlareError): void {
    this.results.delete(cmid);
    this.results.set(cmid, outcome);
    if (this.results.size > MAX_RESULTS) this.results.delete(this.results.keys().next().value as string);
  }

  private take(cmid: string): Array<{ resolve: (ack: Ack) => void; reject: (err: Error) => void }> {
    const list = this.waiters.get(cmid) ?? [];
    this.waiters.delete(cmid);
    return list;
  }
}
