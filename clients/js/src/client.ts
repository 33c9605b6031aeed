/**
 * One device's WebSocket connection to Flare, for one user (docs/protocol.md), in browsers and in Node.
 *
 * What it does for an application, as the Python SDK does:
 * - connects, authenticates, and reconnects with jittered exponential backoff, then catches up (sync + pull);
 * - `send` retries on timeouts, drops and retryable errors with the *same* cmid, so a message is stored once;
 * - `messages()` yields other users' (and this user's other devices') messages once each, in seq order per
 *   conversation: duplicates are dropped by seq, and a gap is pulled before anything after it is yielded
 *   (the sans-I/O {@link Ordering} decides; this class only does the I/O). With `echoOwn` it yields this
 *   device's own messages and events too: one ordered stream for a {@link ConversationView};
 * - message operations retry with the same op id; receipts, typing, presence and settings are streams;
 * - an {@link Outbox} (IndexedDB in browsers) keeps messages written offline and sends them once connected.
 *
 * Only the sends, operations and the outbox retry by themselves; every other request is sent once and throws
 * `Disconnected` or `TimeoutError` if the connection fails under it. The reference is docs/sdk-js.md.
 */
import { type Codec, type Encoding, codecFor } from "./codec.js";
import { CloseCode, ConnectError, Disconnected, ErrorCode, FlareError, TimeoutError } from "./errors.js";
import {
  type Ack,
  type AuthOk,
  type Body,
  type ClientFrame,
  type ConvSettings,
  type ConvSummary,
  type Convs,
  type Hidden,
  type Kick,
  type Message,
  type Messages,
  type PresenceState,
  type ReadersList,
  type Receipt,
  type ServerFrame,
  type TypingNotice,
  payload,
  toMessage,
  withDefaults,
} from "./frames.js";
import { newId } from "./ids.js";
import { Ordering } from "./ordering.js";
import {
  type OutboxEntry,
  type OutboxEvent,
  type OutboxStore,
  type OutboxTransport,
  Outbox,
  defaultOutboxStore,
} from "./outbox.js";
import type { RestClient, TokenProvider } from "./rest.js";
import { Stream } from "./stream.js";

/** The part of the WebSocket API the client uses: the browser's, Node's (22+, or 20 with
 * `--experimental-websocket`), or the `ws` package's. */
export interface WebSocketLike {
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null; // eslint-disable-line @typescript-eslint/no-explicit-any
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  onerror: ((ev: any) => void) | null; // eslint-disable-line @typescript-eslint/no-explicit-any
}
export type WebSocketFactory = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface FlareClientOptions {
  /** `"json"` (text frames, default) or `"msgpack"` (binary frames); the API is the same. */
  encoding?: Encoding;
  /** A codec to use instead of the built-in one of `encoding` (e.g. one built on `@msgpack/msgpack`). */
  codec?: Codec;
  /** How long a request waits for its reply, and for the connection while reconnecting (default 10 s). */
  requestTimeoutMs?: number;
  /** Reconnect after a drop (default true). */
  reconnect?: boolean;
  /** First reconnect pause, doubled after each failed attempt up to `maxBackoffMs` (defaults 50 ms, 5 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Tries of a send or operation before its last error is thrown (default 8). */
  attempts?: number;
  /** Informational, sent in `auth` (default `"js"`). */
  platform?: string;
  /** `messages()` also yields this device's own messages and operation events, as stored. */
  echoOwn?: boolean;
  /** Called with every decoded frame the server sends, before the client handles it (counting, diagnostics). */
  onFrame?: (frame: ServerFrame) => void;
  /** The WebSocket class; default: the global one. */
  WebSocket?: WebSocketFactory;
  /** Where the outbox keeps messages (default: IndexedDB `flare-outbox:<device>` if available, else memory);
   * `false`: no outbox. */
  outbox?: OutboxStore | false;
  /** An outbox entry first attempted longer ago than this is looked up before it is sent again (default
   * 240 s, under the server's 300 s `idempotency_window_s`). */
  idempotencyWindowMs?: number;
  /** Items each stream queues for `next*()` and `for await` readers before dropping the oldest (default
   * 10,000); 0: no queues, listeners (`on`) only. */
  maxQueued?: number;
  /** With nothing received for this long, send a `ping`; no answer within `requestTimeoutMs` drops the
   * connection (then reconnects). Default: the server's `heartbeat_s`; 0: off. */
  livenessMs?: number;
}

export interface SendOptions {
  /** Message kind (default `"text"`). */
  kind?: string;
  /** Idempotency key (default: a new random id). */
  cmid?: string;
  attempts?: number;
}

export interface OperateOptions {
  body?: Body;
  baseVersion?: number;
  emoji?: string;
  opid?: string;
  attempts?: number;
}

export interface SettingsChange {
  pinned?: boolean;
  muted?: boolean;
  hidden?: boolean;
  draft?: string;
  /** Clear the history for this user up to this seq (never moves back). */
  clearTo?: number;
}

/** The pushes and state changes `on()` listens to. */
export interface ClientEvents {
  message: Message;
  receipt: Receipt;
  typing: TypingNotice;
  presence: PresenceState;
  settings: ConvSettings;
  hidden: Hidden;
  outbox: OutboxEvent;
  connected: AuthOk;
  disconnected: { code: number | null };
}

interface Pending {
  resolve(frame: ServerFrame): void;
  reject(err: Error): void;
}

export class FlareClient {
  /** The access token, or a function giving one for each (re)connect (`RestClient.tokenProvider()`). */
  token: string | TokenProvider;
  readonly url: string;
  readonly device: string;
  /** Whether a drop is followed by a reconnect (may be changed at any time). */
  reconnect: boolean;
  echoOwn: boolean;
  onFrame: ((frame: ServerFrame) => void) | undefined;
  /** The authenticated user id ("" before the first `auth_ok`). */
  user = "";
  session = "";
  /** The conversation-list version of the last sync. */
  version = 0;
  /** Server clock minus this clock, in ms, as of the last `auth_ok`. */
  skewMs = 0;
  lastCloseCode: number | null = null;
  lastKick: Kick | null = null;
  /** Successful reconnects so far. */
  reconnects = 0;
  /** The outbox, or null with `outbox: false`. */
  readonly outbox: Outbox | null;

  private readonly codec: Codec;
  private readonly requestTimeoutMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly attempts: number;
  private readonly platform: string;
  private readonly WS: WebSocketFactory;
  private readonly livenessOption: number | undefined;
  private ws: WebSocketLike | null = null;
  private isConnected = false;
  private closing = false;
  private reconnecting = false;
  private tokenRejected = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private connectedWaiters: Array<{ resolve(): void; reject(err: Error): void }> = [];
  private readonly ordering = new Ordering();
  private readonly fills = new Map<string, Promise<void>>();
  private readonly refill = new Set<string>();
  private sleeping: { timer: ReturnType<typeof setTimeout>; wake(): void } | null = null;
  private liveness: ReturnType<typeof setTimeout> | null = null;
  private livenessMs = 0;
  private lastInbound = 0;
  private readonly streams: { [K in keyof ClientEvents]: Stream<ClientEvents[K]> };

  constructor(url: string, token: string | TokenProvider, device: string, options: FlareClientOptions = {}) {
    this.url = url;
    this.token = token;
    this.device = device;
    this.codec = options.codec ?? codecFor(options.encoding ?? "json");
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.reconnect = options.reconnect ?? true;
    this.initialBackoffMs = options.initialBackoffMs ?? 50;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.attempts = options.attempts ?? 8;
    this.platform = options.platform ?? "js";
    this.echoOwn = options.echoOwn ?? false;
    this.onFrame = options.onFrame;
    this.livenessOption = options.livenessMs;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (WS === undefined) {
      throw new TypeError(
        "no WebSocket: pass options.WebSocket (e.g. the ws package), or run Node 20 with --experimental-websocket",
      );
    }
    this.WS = WS;
    const limit = options.maxQueued ?? 10_000;
    this.streams = {
      message: new Stream("message", limit),
      receipt: new Stream("receipt", limit),
      typing: new Stream("typing notice", Math.min(limit, 1000)),
      presence: new Stream("presence change", limit),
      settings: new Stream("settings change", limit),
      hidden: new Stream("hidden change", limit),
      outbox: new Stream("outbox event", 0), // replaced by the outbox's own stream below
      connected: new Stream("connection", 0),
      disconnected: new Stream("disconnection", 0),
    };
    const store = options.outbox === undefined ? defaultOutboxStore(`flare-outbox:${device}`) : options.outbox;
    this.outbox = store === false ? null : new Outbox(store, this.outboxTransport(), options.idempotencyWindowMs ?? 240_000, limit);
    if (this.outbox !== null) this.streams.outbox = this.outbox.events;
  }

  /** A client for the user of `rest`: the gateway from `GET /v1/gateways`, tokens from `rest` (refreshed). */
  static async fromRest(rest: RestClient, device: string, options: FlareClientOptions = {}): Promise<FlareClient> {
    const [url] = await rest.gateways();
    if (url === undefined) throw new ConnectError("the server lists no WebSocket gateway");
    return new FlareClient(url, rest.tokenProvider(), device, options);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Opens the WebSocket and authenticates; returns `auth_ok`. Throws `FlareError` 401 for a bad or expired
   * token (503 while the server shuts down) and `ConnectError` if the server cannot be reached; the first
   * connect is not retried. Then sends what the outbox holds. It does not sync: call `catchUp()`.
   */
  async connect(): Promise<AuthOk> {
    this.closing = false;
    const ok = await this.open();
    void this.outbox?.flush().catch(() => undefined);
    return ok;
  }

  private async resolveToken(): Promise<string> {
    const rejected = this.tokenRejected;
    this.tokenRejected = false;
    return typeof this.token === "function" ? await this.token(rejected) : this.token;
  }

  private async open(): Promise<AuthOk> {
    const token = await this.resolveToken();
    const ws = new this.WS(this.url, [`flare.v1.${this.codec.encoding}`]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new ConnectError(`no WebSocket connection within ${this.requestTimeoutMs} ms`)), this.requestTimeoutMs);
        ws.onopen = () => {
          clearTimeout(timer);
          resolve();
        };
        // Browsers follow an error with a close event; Node's WebSocket may not, when the connect fails.
        ws.onerror = () => {
          clearTimeout(timer);
          reject(new ConnectError(`the WebSocket to ${this.url} failed to open`));
        };
        ws.onclose = (ev) => {
          clearTimeout(timer);
          reject(new ConnectError(`the WebSocket to ${this.url} closed before opening (${ev.code})`));
        };
      });
    } catch (err) {
      if (this.ws === ws) this.ws = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
      throw err;
    }
    ws.onmessage = (ev) => this.onData(ws, ev.data);
    ws.onclose = (ev) => this.onClosed(ws, ev.code);
    ws.onerror = () => undefined; // the close event follows (and the liveness check catches a silent death)
    this.lastCloseCode = null;
    this.lastInbound = Date.now();
    let reply: AuthOk;
    try {
      const frame = { type: "auth", id: this.nextId++, token, device: this.device, platform: this.platform };
      reply = payload<AuthOk>(await this.request(frame, { requireConnected: false }));
    } catch (err) {
      if (err instanceof FlareError && err.code === ErrorCode.UNAUTHORIZED) this.tokenRejected = true;
      if (this.ws === ws) this.ws = null;
      ws.close(1000);
      throw err;
    }
    this.user = reply.user;
    this.session = reply.session;
    this.skewMs = reply.server_ts - Date.now();
    this.livenessMs = this.livenessOption ?? reply.heartbeat_s * 1000;
    this.isConnected = true;
    for (const w of this.connectedWaiters.splice(0)) w.resolve();
    this.armLiveness();
    this.streams.connected.push(reply);
    return reply;
  }

  /** Closes for good (no reconnect); pending requests fail with `Disconnected`. */
  async close(): Promise<void> {
    this.closing = true;
    this.sleeping?.wake();
    const ws = this.ws;
    this.detach(null);
    for (const w of this.connectedWaiters.splice(0)) w.reject(new Disconnected("client closed"));
    if (ws !== null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 5000);
        ws.onclose = () => {
          clearTimeout(timer);
          resolve();
        };
        try {
          ws.close(1000);
        } catch {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  }

  /** Cuts the connection as a network failure would (no waiting for a close handshake); tests use it. */
  dropConnection(): void {
    const ws = this.ws;
    if (ws === null) return;
    this.onClosed(ws, 1006);
    try {
      ws.onclose = null;
      ws.close(4000, "dropped");
    } catch {
      // already closed
    }
  }

  /** Authenticated and usable now (false while reconnecting and after `close`). */
  get connected(): boolean {
    return this.isConnected;
  }

  /** Resolves once connected (e.g. after a drop, for the reconnect); rejects with `TimeoutError`. */
  waitConnected(timeoutMs = this.requestTimeoutMs): Promise<void> {
    if (this.isConnected) return Promise.resolve();
    if (this.closing) return Promise.reject(new Disconnected("client closed"));
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.connectedWaiters = this.connectedWaiters.filter((w) => w !== waiter);
        reject(new TimeoutError(`not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      this.connectedWaiters.push(waiter);
    });
  }

  /** Listens to a stream of pushes or state changes; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(event: K, listener: (item: ClientEvents[K]) => void): () => void {
    return (this.streams[event] as Stream<ClientEvents[K]>).on(listener);
  }

  /** Forgets the socket and fails what waits on it; returns whether it was authenticated. */
  private detach(code: number | null): boolean {
    this.ws = null;
    const was = this.isConnected;
    this.isConnected = false;
    if (this.liveness !== null) clearTimeout(this.liveness);
    this.liveness = null;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new Disconnected("connection closed"));
    if (was) this.streams.disconnected.push({ code });
    return was;
  }

  private onClosed(ws: WebSocketLike, code: number): void {
    if (ws !== this.ws) return;
    this.lastCloseCode = code;
    const was = this.detach(code);
    const kick = this.lastKick;
    // A connection that never authenticated is the business of whoever opened it (connect, the loop).
    if (!was || this.closing || !this.reconnect || this.reconnecting) return;
    if (kick !== null && !kick.reconnect) return;
    if (code === CloseCode.REPLACED) return; // reconnecting would kick the other connection
    if (code === CloseCode.AUTH_FAILED && typeof this.token !== "function") return;
    void this.reconnectLoop();
  }

  private async reconnectLoop(): Promise<void> {
    this.reconnecting = true;
    let delay = this.lastKick?.retry_after_ms || this.initialBackoffMs;
    this.lastKick = null;
    try {
      while (!this.closing) {
        await this.sleep(delay + Math.random() * (delay / 2));
        if (this.closing) return;
        try {
          await this.open();
        } catch {
          delay = Math.min(Math.max(delay * 2, 100), this.maxBackoffMs);
          continue;
        }
        this.reconnects += 1;
        try {
          await this.catchUp();
        } catch {
          // dropped again during the catch-up: the loop goes on below
        }
        void this.outbox?.flush().catch(() => undefined);
        if (this.isConnected) return;
        delay = this.initialBackoffMs;
      }
    } finally {
      this.reconnecting = false;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleeping = null;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeping = { timer, wake };
    });
  }

  private armLiveness(): void {
    if (this.livenessMs <= 0) return;
    const check = (): void => {
      this.liveness = null;
      if (!this.isConnected) return;
      const idle = Date.now() - this.lastInbound;
      if (idle < this.livenessMs) {
        this.liveness = unref(setTimeout(check, this.livenessMs - idle));
        return;
      }
      this.ping().then(
        () => this.armLiveness(),
        (err) => {
          if (err instanceof TimeoutError) this.dropConnection();
        },
      );
    };
    this.liveness = unref(setTimeout(check, this.livenessMs));
  }

  // ------------------------------------------------------------------ requests

  private request(frame: ClientFrame, options: { requireConnected?: boolean } = {}): Promise<ServerFrame> {
    const send = (): Promise<ServerFrame> => {
      const ws = this.ws;
      if (ws === null) return Promise.reject(new Disconnected("not connected"));
      return new Promise<ServerFrame>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(frame.id);
          reject(new TimeoutError(`no reply to ${frame.type} within ${this.requestTimeoutMs} ms`));
        }, this.requestTimeoutMs);
        this.pending.set(frame.id, {
          resolve: (reply) => {
            clearTimeout(timer);
            if (reply.type !== "error") return resolve(reply);
            const e = reply as unknown as { code: number; message: string; retryable: boolean; detail: Record<string, unknown> | null };
            reject(new FlareError(e.code, e.message, e.retryable, e.detail));
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        });
        try {
          ws.send(this.codec.encode(frame));
        } catch (err) {
          this.pending.delete(frame.id);
          clearTimeout(timer);
          reject(new Disconnected(`send failed: ${(err as Error).message}`));
        }
      });
    };
    if (options.requireConnected === false || this.isConnected) return send();
    return this.waitConnected().then(send);
  }

  private async call<T>(type: string, fields: Record<string, unknown> = {}): Promise<T> {
    return payload<T>(await this.request({ type, id: this.nextId++, ...fields }));
  }

  /** Sends the frame `make()` builds (the same idempotency key each time) until it is answered. */
  private async retrying(make: () => ClientFrame, attempts: number): Promise<ServerFrame> {
    let delay = 50;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.request(make());
      } catch (err) {
        const retry = err instanceof FlareError ? err.retryable : err instanceof TimeoutError || err instanceof Disconnected;
        if (!retry || attempt >= attempts || this.closing) throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, this.maxBackoffMs);
    }
  }

  /**
   * Sends a message and resolves with the server's `Ack` (`seq`, `msg_id`, `ts`, `duplicate`; `body` when the
   * content filter masked it) once it is stored durably. `content` is the text of a text message, or the body
   * of any kind (`options.kind`). Retried up to `attempts` times with the same `cmid` on timeouts, drops and
   * retryable errors (429, 500, 503). Not retried: `FlareError` 403, 404, 413, 422, 451.
   */
  async send(conv: string, content: string | Body, options: SendOptions = {}): Promise<Ack> {
    const body = typeof content === "string" ? { text: content } : content;
    const cmid = options.cmid ?? newId();
    const kind = options.kind ?? "text";
    const reply = await this.retrying(
      () => ({ type: "send", id: this.nextId++, conv, cmid, kind, body }),
      options.attempts ?? this.attempts,
    );
    const ack = payload<Ack>(reply);
    this.own(conv, ack.seq);
    return ack;
  }

  /**
   * Writes a message to the outbox and sends it when connected (now, or after a reconnect or a reload), once.
   * Resolves with the entry as soon as it is stored; `outbox.settled(entry.cmid)` resolves with its ack, and
   * `on("outbox", ...)` tells what happens to every entry. Throws if the client has no outbox.
   */
  async enqueue(conv: string, content: string | Body, options: { kind?: string; cmid?: string } = {}): Promise<OutboxEntry> {
    if (this.outbox === null) throw new TypeError("this client has no outbox (options.outbox is false)");
    const body = typeof content === "string" ? { text: content } : content;
    return this.outbox.enqueue(conv, body, options.kind ?? "text", options.cmid ?? newId());
  }

  private outboxTransport(): OutboxTransport {
    const client = this; // eslint-disable-line @typescript-eslint/no-this-alias
    return {
      get user(): string {
        return client.user;
      },
      get connected(): boolean {
        return client.isConnected;
      },
      sendEntry: (entry) => this.send(entry.conv, entry.body, { kind: entry.kind, cmid: entry.cmid }),
      findStored: (entry) => this.findStored(entry),
    };
  }

  /** Looks for this user's message `entry.cmid` in the newest pages of its conversation, back to a minute
   * before its first attempt (server clock). */
  private async findStored(entry: OutboxEntry): Promise<Ack | null> {
    const since = entry.firstAttemptAt + this.skewMs - 60_000;
    let before: number | undefined;
    for (let page = 0; page < 25; page++) {
      const got = await this.pull(entry.conv, { before, limit: 200 });
      for (const m of got.items) {
        if (m.sender === this.user && m.cmid === entry.cmid) {
          this.own(m.conv, m.seq);
          return { id: 0, conv: m.conv, seq: m.seq, msg_id: m.msg_id, ts: m.ts, duplicate: true, target: 0, version: 0, body: null };
        }
      }
      const first = got.items[0];
      if (!got.more || first === undefined || first.ts < since) return null;
      before = first.seq;
    }
    return null;
  }

  /** Sends `text` quoting message `seq` (the server puts a snapshot of it in `body.reply_to`). */
  reply(conv: string, seq: number, text: string, options: SendOptions = {}): Promise<Ack> {
    return this.send(conv, { text, reply_to: { seq } }, options);
  }

  /**
   * Applies `op` (`recall`, `delete`, `edit`, `react`, `unreact`) to message `seq`; retries reuse the op id.
   * Resolves with the `Ack` of the operation's event (its own `seq`), with `target` and the target's `version`
   * afterwards. Errors (`FlareError`, not retried): 403, 404, 409 (`detail`: the current version), 410, 422.
   */
  async operate(conv: string, seq: number, op: "recall" | "delete" | "edit" | "react" | "unreact", options: OperateOptions = {}): Promise<Ack> {
    const opid = options.opid ?? newId();
    const reply = await this.retrying(
      () => ({
        type: "op",
        id: this.nextId++,
        conv,
        op,
        target: seq,
        opid,
        body: options.body,
        base_version: options.baseVersion,
        emoji: options.emoji,
      }),
      options.attempts ?? this.attempts,
    );
    const ack = payload<Ack>(reply);
    this.own(conv, ack.seq);
    return ack;
  }

  /** Recalls message `seq` for everyone (its sender within `recall_window_s`; group owners and admins). */
  recall(conv: string, seq: number, options: OperateOptions = {}): Promise<Ack> {
    return this.operate(conv, seq, "recall", options);
  }

  /** Deletes message `seq` for everyone (the same rules as recall). */
  delete(conv: string, seq: number, options: OperateOptions = {}): Promise<Ack> {
    return this.operate(conv, seq, "delete", options);
  }

  /** Replaces the text of this user's text message `seq`, made from version `baseVersion`; 409 if stale. */
  edit(conv: string, seq: number, text: string, baseVersion: number, options: OperateOptions = {}): Promise<Ack> {
    return this.operate(conv, seq, "edit", { ...options, body: { text }, baseVersion });
  }

  /** Adds this user's `emoji` reaction to message `seq` (`remove: true` takes it back); 409 if already so. */
  react(conv: string, seq: number, emoji: string, options: OperateOptions & { remove?: boolean } = {}): Promise<Ack> {
    return this.operate(conv, seq, options.remove ? "unreact" : "react", { ...options, emoji });
  }

  /** Hides message `seq` from this user on all of its devices; resolves with the `Hidden` change (which, with
   * `echoOwn`, also goes to this device's hidden stream). */
  async deleteForMe(conv: string, seq: number, options: { attempts?: number } = {}): Promise<Hidden> {
    const opid = newId();
    const reply = await this.retrying(
      () => ({ type: "op", id: this.nextId++, conv, op: "delete_for_me", target: seq, opid }),
      options.attempts ?? this.attempts,
    );
    const hidden = payload<Hidden>(reply);
    if (this.echoOwn) this.streams.hidden.push(hidden); // one stream to render from, as for own messages
    return hidden;
  }

  /** Copies messages `seqs` of `conv` into `to`: one as it is, several merged (titled `title`). */
  async forward(conv: string, seqs: number[], to: string, options: { title?: string; cmid?: string; attempts?: number } = {}): Promise<Ack> {
    const cmid = options.cmid ?? newId();
    const reply = await this.retrying(
      () => ({ type: "forward", id: this.nextId++, conv, seqs, to, cmid, title: options.title ?? "" }),
      options.attempts ?? this.attempts,
    );
    const ack = payload<Ack>(reply);
    this.own(ack.conv, ack.seq);
    return ack;
  }

  /** This device stored `seq`: skip it in the stream, or (echoOwn) pull it into the stream. */
  private own(conv: string, seq: number): void {
    if (!this.echoOwn) return this.seen(conv, seq, null);
    this.ordering.want(conv, seq);
    if (seq > this.ordering.localMax(conv)) void this.fill(conv).catch(() => undefined);
  }

  /** Marks everything up to `seq` as read; the user's other devices (and a direct peer) get a receipt. */
  async read(conv: string, seq: number): Promise<void> {
    await this.call("read", { conv, seq });
  }

  /** Reports that this device has everything up to `seq`; a direct peer gets a `delivered` receipt. */
  async delivered(conv: string, seq: number): Promise<void> {
    await this.call("delivered", { conv, seq });
  }

  /** Who has read message `seq`: `read` and `unread` member ids (without the sender and later joiners). */
  readers(conv: string, seq: number): Promise<ReadersList> {
    return this.call<ReadersList>("readers", { conv, seq });
  }

  /** Watches these users' presence (replaces the list; `[]` stops); resolves with their current states. */
  async watchPresence(users: string[]): Promise<PresenceState[]> {
    return (await this.call<{ items: PresenceState[] }>("presence", { users })).items;
  }

  /** Changes this user's settings of `conv` (only the fields given); resolves with the resulting settings. */
  updateSettings(conv: string, change: SettingsChange): Promise<ConvSettings> {
    const { clearTo, ...flags } = change;
    return this.call<ConvSettings>("settings", { conv, ...flags, clear_to: clearTo });
  }

  /** Tells the other members of `conv` that this user is typing (at most one notice per 2 s is forwarded). */
  async typing(conv: string): Promise<void> {
    await this.call("typing", { conv });
  }

  /** Round trip to the server; resolves with its time in epoch ms. */
  async ping(): Promise<number> {
    return (await this.call<{ ts: number }>("ping")).ts;
  }

  /**
   * Every conversation changed since list version `since` (default: the last sync's, 0 at first), following
   * pages of `page`; with `recent` (0-50) each with its newest messages. Remembers the new version;
   * `hidden_seqs` also go to the hidden stream. Does not pull messages (`catchUp` does). Not retried.
   */
  async sync(since?: number, options: { page?: number; recent?: number } = {}): Promise<ConvSummary[]> {
    let version = since ?? this.version;
    const out: ConvSummary[] = [];
    for (;;) {
      const reply = await this.call<Convs>("sync", { since: version, limit: options.page ?? 100, recent: options.recent ?? 0 });
      out.push(...reply.items);
      for (const item of reply.items) {
        if (item.hidden_seqs.length) this.streams.hidden.push({ id: null, conv: item.conv, seqs: item.hidden_seqs, version: item.version });
      }
      version = Math.max(version, reply.version);
      if (!reply.more) break;
    }
    this.version = Math.max(this.version, version);
    return out;
  }

  /**
   * A new device: the `first` most recently active conversations with their `recent` newest messages in one
   * round trip ("fast" sync), then the rest of the list, most recent first. Not fed to `messages()`.
   */
  async restore(options: { first?: number; recent?: number } = {}): Promise<ConvSummary[]> {
    const reply = await this.call<Convs>("sync", { limit: options.first ?? 20, strategy: "fast", recent: options.recent ?? 20 });
    const head = reply.items;
    if (!reply.more) return head;
    const seen = new Set(head.map((c) => c.conv));
    const rest = (await this.sync(0)).filter((c) => !seen.has(c.conv));
    return [...head, ...rest.sort((a, b) => b.version - a.version)];
  }

  /**
   * One page of `conv` (at most `limit`, 1-500), ascending, messages in their current state: with `after`,
   * the oldest above it; without, the newest (below `before` if given). Throws `FlareError` 416, 410
   * (`detail.min_seq`), 403.
   */
  pull(conv: string, options: { after?: number; before?: number; limit?: number } = {}): Promise<Messages> {
    return this.call<Messages>("pull", { conv, after: options.after, before: options.before, limit: options.limit ?? 50 });
  }

  /** Every message of `conv` this user may read with seq > `after`, ascending, in pages of `page`. */
  async history(conv: string, options: { after?: number; page?: number } = {}): Promise<Message[]> {
    let after = options.after ?? 0;
    const out: Message[] = [];
    for (;;) {
      const reply = await this.pull(conv, { after, limit: options.page ?? 200 });
      out.push(...reply.items);
      const last = reply.items[reply.items.length - 1];
      if (!reply.more || last === undefined) return out;
      after = last.seq;
    }
  }

  /** Syncs the list and pulls every conversation this client is behind on, into `messages()`. */
  async catchUp(): Promise<ConvSummary[]> {
    const changed = await this.sync();
    for (const summary of changed) if (!summary.left) this.ordering.want(summary.conv, summary.max_seq);
    // Also conversations an earlier catch-up or gap pull did not finish (cut by a disconnect).
    for (const conv of this.ordering.behind()) await this.fill(conv);
    return changed;
  }

  /**
   * This device already holds what it needs of `conv` up to `seq` (an app that shows the newest page of each
   * conversation and loads older ones as the user scrolls): `messages()`, gap pulls and `catchUp()` go on from
   * there instead of from seq 1. Never moves back; messages held beyond `seq` come out of `messages()`.
   */
  startAfter(conv: string, seq: number): void {
    for (const m of this.ordering.floor(conv, seq + 1)) this.streams.message.push(m);
  }

  /** The seq up to which this client has seen every message of `conv` (0 if none). */
  localMaxSeq(conv: string): number {
    return this.ordering.localMax(conv);
  }

  // ------------------------------------------------------------------ incoming

  /** Incoming messages and events, forever: once each, in seq order per conversation. */
  messages(): AsyncIterable<Message> {
    return this.streams.message;
  }

  /** The next item of `messages()`; rejects with `TimeoutError` after `timeoutMs`. */
  nextMessage(timeoutMs = 10_000): Promise<Message> {
    return this.streams.message.next(timeoutMs);
  }

  /** How many messages are queued for `nextMessage()`/`messages()`. */
  pendingMessages(): number {
    return this.streams.message.size;
  }

  /** The next read or delivered receipt (a peer's, or this user's on another device). */
  nextReceipt(timeoutMs = 10_000): Promise<Receipt> {
    return this.streams.receipt.next(timeoutMs);
  }

  /** The next typing notice of another member (only the newest 1000 unread ones are kept). */
  nextTyping(timeoutMs = 10_000): Promise<TypingNotice> {
    return this.streams.typing.next(timeoutMs);
  }

  /** The next presence change of a watched user. */
  nextPresence(timeoutMs = 10_000): Promise<PresenceState> {
    return this.streams.presence.next(timeoutMs);
  }

  /** The next settings change made on another of this user's devices. */
  nextSettings(timeoutMs = 10_000): Promise<ConvSettings> {
    return this.streams.settings.next(timeoutMs);
  }

  /** Messages this user deleted for itself on another device (pushed, or found by a sync). */
  nextHidden(timeoutMs = 10_000): Promise<Hidden> {
    return this.streams.hidden.next(timeoutMs);
  }

  private onData(ws: WebSocketLike, data: unknown): void {
    if (ws !== this.ws) return;
    this.lastInbound = Date.now();
    let frame: ServerFrame;
    try {
      frame = withDefaults(this.codec.decode(data as string | ArrayBuffer));
    } catch {
      return; // undecodable: the server only sends valid frames, so this is a broken proxy; nothing to match
    }
    this.onFrame?.(frame);
    const id = frame["id"];
    switch (frame.type) {
      case "msg":
        return this.seen(String(frame["conv"]), Number(frame["seq"]), toMessage(frame));
      case "receipt":
        return this.streams.receipt.push(payload<Receipt>(frame));
      case "typing":
        return this.streams.typing.push(payload<TypingNotice>(frame));
      case "presence":
        return this.streams.presence.push(payload<PresenceState>(frame));
      case "kick":
        this.lastKick = payload<Kick>(frame);
        return;
      case "conv_settings":
        if (id === null) return this.streams.settings.push(payload<ConvSettings>(frame));
        break;
      case "hidden":
        if (id === null) return this.streams.hidden.push(payload<Hidden>(frame));
        break;
    }
    if (typeof id === "number") {
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve(frame);
    }
  }

  private seen(conv: string, seq: number, message: Message | null): void {
    for (const m of this.ordering.seen(conv, seq, message)) this.streams.message.push(m);
    if (this.ordering.needsPull(conv)) void this.fill(conv).catch(() => undefined);
  }

  /** Pulls `conv` from its first missing seq until the gap is closed; one pull loop per conversation. */
  private fill(conv: string): Promise<void> {
    const running = this.fills.get(conv);
    if (running !== undefined) {
      this.refill.add(conv);
      return running;
    }
    const state = this.ordering.state(conv);
    state.pulling = true;
    const run = (async () => {
      try {
        do {
          this.refill.delete(conv);
          await this.fillOnce(conv);
        } while (this.refill.has(conv));
      } finally {
        this.fills.delete(conv);
        state.pulling = false;
      }
    })();
    this.fills.set(conv, run);
    return run;
  }

  private async fillOnce(conv: string): Promise<void> {
    for (;;) {
      let reply: Messages;
      try {
        reply = await this.pull(conv, { after: this.ordering.localMax(conv), limit: 200 });
      } catch (err) {
        const minSeq = err instanceof FlareError && err.code === ErrorCode.GONE ? err.detail?.["min_seq"] : undefined;
        if (typeof minSeq !== "number") throw err;
        for (const m of this.ordering.floor(conv, minSeq)) this.streams.message.push(m); // history below it is gone
        continue;
      }
      const { ready, done } = this.ordering.page(conv, reply.items, reply.more);
      for (const m of ready) this.streams.message.push(m);
      if (done) return;
    }
  }
}

function unref<T>(timer: T): T {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}
