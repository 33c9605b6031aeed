// Flare JavaScript SDK 0.1.0. Built from clients/js/src by clients/js/scripts/build.mjs; do not edit.

// src/version.ts
var VERSION = "0.1.0";
var PROTOCOL = 1;

// src/errors.ts
var ErrorCode = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  GONE: 410,
  TOO_LARGE: 413,
  OUT_OF_RANGE: 416,
  INVALID: 422,
  RATE_LIMITED: 429,
  BLOCKED: 451,
  INTERNAL: 500,
  UNAVAILABLE: 503
};
var CloseCode = {
  NORMAL: 1e3,
  GOING_AWAY: 1001,
  TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013,
  AUTH_FAILED: 4001,
  AUTH_TIMEOUT: 4002,
  PROTOCOL_VIOLATION: 4003,
  REPLACED: 4004,
  SLOW_CONSUMER: 4008,
  RATE_LIMITED: 4029,
  RESTART: 4100
};
var FlareError = class extends Error {
  constructor(code, message, retryable = false, detail = null) {
    super(message);
    this.code = code;
    this.retryable = retryable;
    this.detail = detail;
  }
  code;
  retryable;
  detail;
  name = "FlareError";
};
var Disconnected = class extends Error {
  name = "Disconnected";
};
var TimeoutError = class extends Error {
  name = "TimeoutError";
};
var ConnectError = class extends Error {
  name = "ConnectError";
};

// src/frames.ts
function fill(raw, defaults) {
  const out = { ...raw };
  for (const [k, v] of Object.entries(defaults)) {
    if (!(k in out)) out[k] = Array.isArray(v) ? [] : v !== null && typeof v === "object" ? {} : v;
  }
  return out;
}
var MESSAGE_DEFAULTS = { cmid: "", body: {}, version: 1, state: "", edited_at: 0, reactions: {} };
function toMessage(raw) {
  const { type: _type, ...fields } = raw;
  return fill(fields, MESSAGE_DEFAULTS);
}
function toSummary(raw) {
  const s = fill(raw, {
    unread_mentions: 0,
    name: "",
    avatar: "",
    peer: "",
    role: "",
    join_seq: 0,
    left: false,
    pinned: false,
    muted: false,
    hidden: false,
    draft: "",
    cleared_seq: 0,
    last: null,
    recent: [],
    hidden_seqs: []
  });
  if (s.last) s.last = toMessage(s.last);
  s.recent = s.recent.map((m) => toMessage(m));
  return s;
}
var DEFAULTS = {
  ack: { duplicate: false, target: 0, version: 0, body: null },
  convs: { more: false },
  messages: { more: false },
  receipt: { device: "" },
  typing: { device: "" },
  presence: { last_seen: 0 },
  conv_settings: { id: null, pinned: false, muted: false, hidden: false, draft: "", cleared_seq: 0 },
  hidden: { id: null },
  kick: { reconnect: true, retry_after_ms: 0, reason: "" },
  error: { id: null, retryable: false, detail: null }
};
function withDefaults(frame) {
  const out = fill(frame, DEFAULTS[frame.type] ?? {});
  if (frame.type === "convs") out.items = frame.items.map(toSummary);
  else if (frame.type === "messages") out.items = frame.items.map(toMessage);
  else if (frame.type === "presence_list") {
    out.items = frame.items.map((p) => fill(p, { last_seen: 0 }));
  }
  return out;
}
function payload(frame) {
  const { type: _type, ...rest } = frame;
  return rest;
}

// src/msgpack.ts
var utf8Encoder = new TextEncoder();
var utf8Decoder = new TextDecoder("utf-8", { fatal: true });
function packMsgpack(value) {
  const w = new Writer();
  w.value(value, 0);
  return w.finish();
}
function unpackMsgpack(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const r = new Reader(bytes);
  const out = r.value(0);
  if (r.pos !== bytes.length) throw new RangeError(`msgpack: ${bytes.length - r.pos} trailing bytes`);
  return out;
}
var MAX_DEPTH = 100;
var Writer = class {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  pos = 0;
  finish() {
    return this.buf.slice(0, this.pos);
  }
  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(b) {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }
  head(tag, write, size) {
    this.ensure(1 + size);
    this.buf[this.pos] = tag;
    write(this.view, this.pos + 1);
    this.pos += 1 + size;
  }
  bytes(b) {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  value(v, depth) {
    if (depth > MAX_DEPTH) throw new RangeError("msgpack: nesting too deep");
    if (v === null || v === void 0) this.u8(192);
    else if (v === false) this.u8(194);
    else if (v === true) this.u8(195);
    else if (typeof v === "number") this.number(v);
    else if (typeof v === "bigint") this.bigint(v);
    else if (typeof v === "string") this.string(v);
    else if (v instanceof Uint8Array) {
      this.binHead(v.length);
      this.bytes(v);
    } else if (Array.isArray(v)) {
      this.length(v.length, 144, 220);
      for (const item of v) this.value(item, depth + 1);
    } else if (typeof v === "object") {
      const entries = Object.entries(v).filter(([, x]) => x !== void 0);
      this.length(entries.length, 128, 222);
      for (const [k, x] of entries) {
        this.string(k);
        this.value(x, depth + 1);
      }
    } else throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
  }
  /** A fixed-size header when `fix` is given and n < 16, else the 16- or 32-bit form (`tag16`, `tag16 + 1`). */
  length(n, fix, tag16) {
    if (n < 16) this.u8(fix | n);
    else if (n < 65536) this.head(tag16, (v, at) => v.setUint16(at, n), 2);
    else this.head(tag16 + 1, (v, at) => v.setUint32(at, n), 4);
  }
  binHead(n) {
    if (n < 256) this.head(196, (v, at) => v.setUint8(at, n), 1);
    else if (n < 65536) this.head(197, (v, at) => v.setUint16(at, n), 2);
    else this.head(198, (v, at) => v.setUint32(at, n), 4);
  }
  number(n) {
    if (!Number.isInteger(n) || !Number.isSafeInteger(n)) {
      this.head(203, (v, at) => v.setFloat64(at, n), 8);
    } else if (n >= 0) {
      if (n < 128) this.u8(n);
      else if (n < 256) this.head(204, (v, at) => v.setUint8(at, n), 1);
      else if (n < 65536) this.head(205, (v, at) => v.setUint16(at, n), 2);
      else if (n < 4294967296) this.head(206, (v, at) => v.setUint32(at, n), 4);
      else this.head(207, (v, at) => v.setBigUint64(at, BigInt(n)), 8);
    } else if (n >= -32) this.u8(n & 255);
    else if (n >= -128) this.head(208, (v, at) => v.setInt8(at, n), 1);
    else if (n >= -32768) this.head(209, (v, at) => v.setInt16(at, n), 2);
    else if (n >= -2147483648) this.head(210, (v, at) => v.setInt32(at, n), 4);
    else this.head(211, (v, at) => v.setBigInt64(at, BigInt(n)), 8);
  }
  bigint(n) {
    if (n >= 0n && n < 2n ** 64n) this.head(207, (v, at) => v.setBigUint64(at, n), 8);
    else if (n < 0n && n >= -(2n ** 63n)) this.head(211, (v, at) => v.setBigInt64(at, n), 8);
    else throw new RangeError("msgpack: integer out of 64-bit range");
  }
  string(s) {
    const b = utf8Encoder.encode(s);
    if (b.length < 32) this.u8(160 | b.length);
    else if (b.length < 256) this.head(217, (v, at) => v.setUint8(at, b.length), 1);
    else if (b.length < 65536) this.head(218, (v, at) => v.setUint16(at, b.length), 2);
    else this.head(219, (v, at) => v.setUint32(at, b.length), 4);
    this.bytes(b);
  }
};
var Reader = class {
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  buf;
  pos = 0;
  view;
  need(n) {
    if (this.pos + n > this.buf.length) throw new RangeError("msgpack: truncated input");
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8() {
    return this.view.getUint8(this.need(1));
  }
  u16() {
    return this.view.getUint16(this.need(2));
  }
  u32() {
    return this.view.getUint32(this.need(4));
  }
  str(n) {
    const at = this.need(n);
    return utf8Decoder.decode(this.buf.subarray(at, at + n));
  }
  bin(n) {
    const at = this.need(n);
    return this.buf.slice(at, at + n);
  }
  array(n, depth) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
    return out;
  }
  map(n, depth) {
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== "string" && typeof key !== "number") throw new TypeError("msgpack: map key is not a string");
      Object.defineProperty(out, String(key), { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  value(depth) {
    if (depth > MAX_DEPTH) throw new RangeError("msgpack: nesting too deep");
    const b = this.u8();
    if (b < 128) return b;
    if (b < 144) return this.map(b & 15, depth);
    if (b < 160) return this.array(b & 15, depth);
    if (b < 192) return this.str(b & 31);
    if (b >= 224) return b - 256;
    switch (b) {
      case 192:
        return null;
      case 194:
        return false;
      case 195:
        return true;
      case 196:
        return this.bin(this.u8());
      case 197:
        return this.bin(this.u16());
      case 198:
        return this.bin(this.u32());
      case 202:
        return this.view.getFloat32(this.need(4));
      case 203:
        return this.view.getFloat64(this.need(8));
      case 204:
        return this.u8();
      case 205:
        return this.u16();
      case 206:
        return this.u32();
      case 207:
        return Number(this.view.getBigUint64(this.need(8)));
      case 208:
        return this.view.getInt8(this.need(1));
      case 209:
        return this.view.getInt16(this.need(2));
      case 210:
        return this.view.getInt32(this.need(4));
      case 211:
        return Number(this.view.getBigInt64(this.need(8)));
      case 217:
        return this.str(this.u8());
      case 218:
        return this.str(this.u16());
      case 219:
        return this.str(this.u32());
      case 220:
        return this.array(this.u16(), depth);
      case 221:
        return this.array(this.u32(), depth);
      case 222:
        return this.map(this.u16(), depth);
      case 223:
        return this.map(this.u32(), depth);
      default:
        throw new TypeError(`msgpack: unsupported type 0x${b.toString(16)} (extension types are not used by Flare)`);
    }
  }
};

// src/codec.ts
function decodeAny(data) {
  const value = typeof data === "string" ? JSON.parse(data) : unpackMsgpack(data);
  if (value === null || typeof value !== "object" || typeof value.type !== "string") {
    throw new TypeError("a frame must be an object with a string type");
  }
  return value;
}
var jsonCodec = {
  encoding: "json",
  encode: (frame) => JSON.stringify(frame),
  decode: decodeAny
};
var msgpackCodec = {
  encoding: "msgpack",
  encode: (frame) => packMsgpack(frame),
  decode: decodeAny
};
function codecFor(encoding) {
  return encoding === "msgpack" ? msgpackCodec : jsonCodec;
}

// src/ids.ts
function directConv(a, b) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}
function newId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// src/ordering.ts
var ConvOrder = class {
  /** Every seq up to this one has been seen. */
  contiguous = 0;
  /** Seen seqs beyond `contiguous`; null: this device's own message, not yielded. */
  ahead = /* @__PURE__ */ new Map();
  pulling = false;
  /** Pull at least up to this seq. */
  wanted = 0;
};
var Ordering = class {
  convs = /* @__PURE__ */ new Map();
  /** The state of `conv`, created empty when unknown. */
  state(conv) {
    let s = this.convs.get(conv);
    if (s === void 0) {
      s = new ConvOrder();
      this.convs.set(conv, s);
    }
    return s;
  }
  /** The seq up to which every message of `conv` has been seen (0 if none). */
  localMax(conv) {
    return this.convs.get(conv)?.contiguous ?? 0;
  }
  /**
   * Seq `seq` of `conv` was seen: a pushed `message`, or (null) one this device stored itself. Returns the
   * messages that became ready, in order; a duplicate returns nothing. Check {@link needsPull} afterwards.
   */
  seen(conv, seq, message) {
    const s = this.state(conv);
    if (seq <= s.contiguous || s.ahead.has(seq)) return [];
    s.ahead.set(seq, message);
    return advance(s);
  }
  /** Something is held beyond a gap and no pull is running: start one (and set `pulling`). */
  needsPull(conv) {
    const s = this.convs.get(conv);
    return s !== void 0 && s.ahead.size > 0 && !s.pulling;
  }
  /** Seq `seq` of `conv` exists (a sync's `max_seq`, an own event to echo): pull up to it. */
  want(conv, seq) {
    const s = this.state(conv);
    s.wanted = Math.max(s.wanted, seq);
  }
  /** Whether `conv` is known to be behind: something wanted or held beyond what was seen. */
  isBehind(conv) {
    const s = this.convs.get(conv);
    return s !== void 0 && (s.wanted > s.contiguous || s.ahead.size > 0);
  }
  /** Every conversation that {@link isBehind}. */
  behind() {
    return [...this.convs.keys()].filter((c) => this.isBehind(c));
  }
  /**
   * A page pulled with `after` = `contiguous`, ascending. A first item beyond `contiguous + 1` means the seqs
   * before it are not readable (below the user's floor, or a seq skipped by a failed write): they are passed.
   */
  page(conv, items, more) {
    const s = this.state(conv);
    const first = items[0];
    if (first !== void 0 && first.seq > s.contiguous + 1) this.skipTo(s, first.seq - 1);
    for (const m of items) {
      if (m.seq > s.contiguous && !s.ahead.has(m.seq)) s.ahead.set(m.seq, m);
    }
    const ready = advance(s);
    const done = items.length === 0 || !more && s.ahead.size === 0 && s.contiguous >= s.wanted;
    return { ready, done };
  }
  /** History below `minSeq` is gone for this user (a 410): resume from there. Returns what became ready. */
  floor(conv, minSeq) {
    const s = this.state(conv);
    if (minSeq - 1 > s.contiguous) this.skipTo(s, minSeq - 1);
    return advance(s);
  }
  skipTo(s, seq) {
    s.contiguous = seq;
    for (const held of [...s.ahead.keys()]) if (held <= seq) s.ahead.delete(held);
  }
};
function advance(s) {
  const ready = [];
  while (s.ahead.has(s.contiguous + 1)) {
    s.contiguous += 1;
    const m = s.ahead.get(s.contiguous);
    s.ahead.delete(s.contiguous);
    if (m) ready.push(m);
  }
  return ready;
}

// src/view.ts
var GONE_STATE = { recall: "recalled", delete: "deleted" };
var EVENTS = /* @__PURE__ */ new Set(["recall", "delete", "edit", "react", "unreact"]);
var EDIT_REFS = ["target", "target_id", "version"];
var QUOTE_REFS = ["seq", "msg_id", "sender", "kind"];
var ConversationView = class {
  /** conv → seq → message in its current state (operation events are kept at their own seqs too). */
  messages = /* @__PURE__ */ new Map();
  /** conv → seqs this user deleted for itself. */
  hidden = /* @__PURE__ */ new Map();
  /**
   * Adds a message or an operation event; an event also changes its target: recall and delete empty it (and
   * scrub the quotes and edit events of it), edit replaces its body when newer, react and unreact change its
   * reactions. Feed events in seq order per conversation; a seq already applied is ignored.
   */
  apply(event) {
    let conv = this.messages.get(event.conv);
    if (conv === void 0) {
      conv = /* @__PURE__ */ new Map();
      this.messages.set(event.conv, conv);
    }
    if (conv.has(event.seq)) return;
    conv.set(event.seq, this.hidden.get(event.conv)?.has(event.seq) ? tombstone(event) : event);
    const targetSeq = event.body["target"];
    if (typeof targetSeq !== "number" || !EVENTS.has(event.kind)) return;
    const gone = GONE_STATE[event.kind];
    if (gone !== void 0) scrub(conv, targetSeq, gone);
    const target = conv.get(targetSeq);
    if (target === void 0 || target.state !== "") return;
    const version = typeof event.body["version"] === "number" ? event.body["version"] : target.version;
    if (gone !== void 0) {
      if (version > target.version) {
        conv.set(targetSeq, { ...target, body: {}, state: gone, reactions: {}, version, edited_at: 0 });
      }
    } else if (event.kind === "edit") {
      const body = event.body["body"];
      if (version > target.version && isBody(body)) conv.set(targetSeq, { ...target, body, version, edited_at: event.ts });
    } else {
      const emoji = String(event.body["emoji"]);
      const current = target.reactions[emoji] ?? [];
      const users = event.kind === "react" ? current.includes(event.sender) ? current : [...current, event.sender] : current.filter((u) => u !== event.sender);
      const reactions = { ...target.reactions };
      if (users.length) reactions[emoji] = users;
      else delete reactions[emoji];
      conv.set(targetSeq, { ...target, reactions });
    }
  }
  /** Marks `hidden.seqs` as deleted for this user: held copies become tombstones, and so do later arrivals. */
  applyHidden(hidden) {
    let seqs = this.hidden.get(hidden.conv);
    if (seqs === void 0) {
      seqs = /* @__PURE__ */ new Set();
      this.hidden.set(hidden.conv, seqs);
    }
    const conv = this.messages.get(hidden.conv);
    for (const seq of hidden.seqs) {
      seqs.add(seq);
      const m = conv?.get(seq);
      if (m !== void 0 && conv !== void 0) conv.set(seq, tombstone(m));
    }
  }
  /** What the user sees of `conv`: messages in seq order, deleted-for-me ones as `hidden` tombstones. */
  history(conv) {
    const held = this.messages.get(conv);
    if (held === void 0) return [];
    return [...held.keys()].sort((a, b) => a - b).map((seq) => held.get(seq));
  }
  /** One message of `conv` in its current state, if held. */
  get(conv, seq) {
    return this.messages.get(conv)?.get(seq);
  }
};
function isBody(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function tombstone(m) {
  return { ...m, body: {}, state: "hidden", reactions: {}, version: 1, edited_at: 0 };
}
function pick(body, keys) {
  const out = {};
  for (const k of keys) if (k in body) out[k] = body[k];
  return out;
}
function unquoted(body, target, state) {
  const quoted = body["reply_to"];
  if (!isBody(quoted) || quoted["seq"] !== target) return null;
  return { ...body, reply_to: { ...pick(quoted, QUOTE_REFS), state } };
}
function scrub(conv, target, state) {
  for (const [seq, m] of conv) {
    if (m.state === "hidden") continue;
    if (m.kind === "edit" && m.body["target"] === target) {
      conv.set(seq, { ...m, body: pick(m.body, EDIT_REFS) });
    } else if (m.kind === "edit" && isBody(m.body["body"])) {
      const edited = unquoted(m.body["body"], target, state);
      if (edited !== null) conv.set(seq, { ...m, body: { ...m.body, body: edited } });
    } else {
      const body = unquoted(m.body, target, state);
      if (body !== null) conv.set(seq, { ...m, body });
    }
  }
}

// src/stream.ts
var Stream = class {
  constructor(name, limit) {
    this.name = name;
    this.limit = limit;
  }
  name;
  limit;
  queue = [];
  waiters = [];
  listeners = /* @__PURE__ */ new Set();
  /** Items dropped because the queue was full. */
  dropped = 0;
  /** Delivers an item: to every listener, then to the oldest waiting `next()` or the queue. */
  push(item) {
    for (const fn of [...this.listeners]) {
      try {
        fn(item);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    const waiter = this.waiters.shift();
    if (waiter !== void 0) return waiter(item);
    if (this.limit <= 0) return;
    if (this.queue.length >= this.limit) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push(item);
  }
  /** Calls `fn` with every later item; returns the function that stops it. */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  /** How many items are queued. */
  get size() {
    return this.queue.length;
  }
  /** The next queued item, or the next to arrive; rejects with `TimeoutError` after `timeoutMs`. */
  next(timeoutMs = 1e4) {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const waiter = (item) => {
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
  async *[Symbol.asyncIterator]() {
    for (; ; ) {
      if (this.queue.length > 0) yield this.queue.shift();
      else yield await new Promise((resolve) => this.waiters.push(resolve));
    }
  }
};

// src/outbox.ts
var MemoryOutboxStore = class {
  entries = /* @__PURE__ */ new Map();
  async list() {
    return [...this.entries.values()].map((e) => structuredClone(e)).sort((a, b) => a.order - b.order);
  }
  async put(entry) {
    this.entries.set(entry.cmid, structuredClone(entry));
  }
  async delete(cmid) {
    this.entries.delete(cmid);
  }
};
var IndexedDbOutboxStore = class {
  constructor(name = "flare-outbox", factory = globalThis.indexedDB) {
    this.name = name;
    this.factory = factory;
  }
  name;
  factory;
  db = null;
  open() {
    this.db ??= new Promise((resolve, reject) => {
      const req = this.factory.open(this.name, 1);
      req.onupgradeneeded = () => {
        req.result.createObjectStore("entries", { keyPath: "cmid" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return this.db;
  }
  async run(mode, op) {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("entries", mode);
      const req = op(tx.objectStore("entries"));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
  async list() {
    const all = await this.run("readonly", (s) => s.getAll());
    return all.sort((a, b) => a.order - b.order);
  }
  async put(entry) {
    await this.run("readwrite", (s) => s.put(entry));
  }
  async delete(cmid) {
    await this.run("readwrite", (s) => s.delete(cmid));
  }
  /** Closes the database connection (a later call opens it again). */
  async close() {
    const db = this.db;
    this.db = null;
    if (db) (await db).close();
  }
};
function defaultOutboxStore(name = "flare-outbox") {
  return typeof globalThis.indexedDB !== "undefined" ? new IndexedDbOutboxStore(name) : new MemoryOutboxStore();
}
var lastOrder = 0;
var MAX_RESULTS = 1e3;
var Outbox = class {
  constructor(store, transport, idempotencyWindowMs, maxQueued) {
    this.store = store;
    this.transport = transport;
    this.idempotencyWindowMs = idempotencyWindowMs;
    this.events = new Stream("outbox event", maxQueued);
  }
  store;
  transport;
  idempotencyWindowMs;
  /** Every change of an entry; `client.on("outbox", fn)` listens to it. */
  events;
  flushing = null;
  again = false;
  waiters = /* @__PURE__ */ new Map();
  /** The outcomes of the latest entries, for a `settled` call that comes after them (bounded). */
  results = /* @__PURE__ */ new Map();
  /** Writes a message to the store (it is kept from now on), then sends it when connected. */
  async enqueue(conv, body, kind, cmid) {
    lastOrder = Math.max(lastOrder + 1, Date.now() * 1e3);
    const entry = {
      cmid,
      conv,
      kind,
      body,
      createdAt: Date.now(),
      order: lastOrder,
      user: "",
      firstAttemptAt: 0,
      error: null
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
  async settled(cmid) {
    const waiting = new Promise((resolve, reject) => {
      const list = this.waiters.get(cmid) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(cmid, list);
    });
    const known = this.results.get(cmid);
    if (known === void 0 && !(await this.store.list()).some((e) => e.cmid === cmid && e.error === null)) {
      const late = this.results.get(cmid);
      for (const w of this.take(cmid)) {
        if (late === void 0) w.reject(new TypeError(`the outbox holds no entry ${cmid}`));
        else if (late instanceof FlareError) w.reject(late);
        else w.resolve(late);
      }
    } else if (known !== void 0) {
      for (const w of this.take(cmid)) {
        if (known instanceof FlareError) w.reject(known);
        else w.resolve(known);
      }
    }
    return waiting;
  }
  /** The entries not sent yet (including refused ones, with `error`), in order. */
  list() {
    return this.store.list();
  }
  /** Clears a refused entry's error and sends it again (same `cmid`). */
  async retry(cmid) {
    const entry = (await this.store.list()).find((e) => e.cmid === cmid);
    if (entry === void 0) return;
    await this.store.put({ ...entry, error: null });
    await this.flush();
  }
  /** Removes an entry without sending it (it may already have been stored if it was attempted). */
  async discard(cmid) {
    await this.store.delete(cmid);
  }
  /** Sends every pending entry, one at a time in order, while connected. Concurrent calls share one pass. */
  flush() {
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
  async drain() {
    const user = this.transport.user;
    for (const entry of await this.store.list()) {
      if (!this.transport.connected) return;
      if (entry.error !== null || entry.user !== "" && entry.user !== user) continue;
      let ack = null;
      try {
        if (entry.firstAttemptAt && Date.now() - entry.firstAttemptAt > this.idempotencyWindowMs) {
          ack = await this.transport.findStored(entry);
          if (ack === null) entry.firstAttemptAt = 0;
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
        if (!(err instanceof FlareError) || err.retryable) return;
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
  remember(cmid, outcome) {
    this.results.delete(cmid);
    this.results.set(cmid, outcome);
    if (this.results.size > MAX_RESULTS) this.results.delete(this.results.keys().next().value);
  }
  take(cmid) {
    const list = this.waiters.get(cmid) ?? [];
    this.waiters.delete(cmid);
    return list;
  }
};

// src/rest.ts
var RestClient = class _RestClient {
  baseUrl;
  tokenState;
  adminKey;
  timeoutMs;
  refreshMarginMs;
  onTokens;
  fetchFn;
  refreshing = null;
  constructor(baseUrl, options = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.tokenState = options.tokens ?? (options.token ? { accessToken: options.token, refreshToken: null, expiresAt: 0, userId: "" } : null);
    this.adminKey = options.adminKey;
    this.timeoutMs = options.timeoutMs ?? 3e4;
    this.refreshMarginMs = options.refreshMarginMs ?? 6e4;
    this.onTokens = options.onTokens;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  }
  /** The current access token (null before login), as last set; see {@link accessToken} for a fresh one. */
  get token() {
    return this.tokenState?.accessToken ?? null;
  }
  set token(token) {
    this.tokenState = token ? { accessToken: token, refreshToken: null, expiresAt: 0, userId: "" } : null;
  }
  /** The tokens held (to save and give back as `tokens` after a reload), or null. */
  get tokens() {
    return this.tokenState ? { ...this.tokenState } : null;
  }
  /** A new client for the same server and admin key, acting as the user of `token`. */
  withToken(token) {
    return new _RestClient(this.baseUrl, {
      token,
      ...this.adminKey !== void 0 ? { adminKey: this.adminKey } : {},
      timeoutMs: this.timeoutMs,
      fetch: this.fetchFn
    });
  }
  /**
   * A valid access token: the held one, refreshed first when it expires within `refreshMarginMs` (or when
   * `forceRefresh`, e.g. after a 401) if a refresh token is held. Throws `FlareError` 401 without tokens.
   */
  async accessToken(forceRefresh = false) {
    const t = this.tokenState;
    if (t === null) throw new FlareError(ErrorCode.UNAUTHORIZED, "not logged in: no access token");
    const expiring = t.expiresAt > 0 && t.expiresAt - Date.now() < this.refreshMarginMs;
    if (t.refreshToken && (forceRefresh || expiring)) return (await this.refreshOnce(t.refreshToken)).access_token;
    return t.accessToken;
  }
  /** A token provider for `FlareClient`: each (re)connect gets a valid token, refreshed after a 401. */
  tokenProvider() {
    return (rejected) => this.accessToken(rejected);
  }
  /**
   * Any REST call for which there is no method; `path` like `"/v1/me"`. Returns the decoded JSON, or null
   * for 204. Throws `FlareError` (with `detail` when the server gave one) for HTTP ≥ 400.
   */
  async request(method, path, options = {}) {
    const bearer = !options.admin && !options.anonymous && this.tokenState !== null;
    let token = bearer ? await this.accessToken() : null;
    let resp = await this.send(method, path, options, token);
    if (resp.status === 401 && token !== null && this.tokenState?.refreshToken && token === this.tokenState.accessToken) {
      await resp.body?.cancel();
      token = await this.accessToken(true);
      resp = await this.send(method, path, options, token);
    }
    if (resp.status >= 400) throw await errorOf(resp);
    if (resp.status === 204) return null;
    return await resp.json();
  }
  async send(method, path, options, token) {
    let url = this.baseUrl + path;
    const params = Object.entries(options.params ?? {}).filter(([, v]) => v !== void 0 && v !== null);
    if (params.length) url += "?" + new URLSearchParams(params.map(([k, v]) => [k, String(v)])).toString();
    const headers = { Accept: "application/json" };
    if (token !== null) headers["Authorization"] = `Bearer ${token}`;
    if (options.admin && this.adminKey) headers["X-Admin-Key"] = this.adminKey;
    let body;
    if (options.json !== void 0) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    try {
      return await this.fetchFn(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      if (err.name === "TimeoutError") throw new TimeoutError(`${method} ${path}: no answer within ${this.timeoutMs} ms`);
      throw new ConnectError(`${method} ${path}: ${err.message}`, { cause: err });
    }
  }
  keep(out) {
    this.tokenState = {
      accessToken: out.access_token,
      refreshToken: out.refresh_token ?? null,
      expiresAt: out.expires_in ? Date.now() + out.expires_in * 1e3 : 0,
      userId: out.user_id
    };
    this.onTokens?.(this.tokens);
    return out;
  }
  refreshOnce(refreshToken) {
    this.refreshing ??= this.refresh(refreshToken).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }
  // ------------------------------------------------------------------ accounts
  /** Where to connect: the WebSocket URLs of the gateway (no token needed). */
  async gateways() {
    const out = await this.request("GET", "/v1/gateways", { anonymous: true });
    return out["websocket"];
  }
  /**
   * Creates an account (the username becomes the user id; passwords are 8-256 characters) and keeps its
   * tokens. Throws `FlareError` 409 if the name is taken, 403 if registration is closed (or needs `invite`).
   */
  async register(username, password, options = {}) {
    const json = { username, password, display_name: options.displayName ?? "", invite: options.invite };
    return this.keep(await this.request("POST", "/v1/auth/register", { json, anonymous: true }));
  }
  /** Logs in and keeps the tokens. Throws `FlareError` 401 on a wrong username or password, 429 when rate limited. */
  async login(username, password) {
    return this.keep(await this.request("POST", "/v1/auth/login", { json: { username, password }, anonymous: true }));
  }
  /**
   * Trades a refresh token (single-use; default: the one held) for a new pair, and keeps it. Throws
   * `FlareError` 401 if it is unknown, used or expired (a reused one also revokes its session).
   */
  async refresh(refreshToken) {
    const token = refreshToken ?? this.tokenState?.refreshToken;
    if (!token) throw new FlareError(ErrorCode.UNAUTHORIZED, "no refresh token");
    const json = { refresh_token: token };
    return this.keep(await this.request("POST", "/v1/auth/refresh", { json, anonymous: true }));
  }
  /** Revokes this session's tokens (`everywhere`: every token of the user) and forgets them. */
  async logout(options = {}) {
    await this.request("POST", "/v1/auth/logout", { json: { everywhere: options.everywhere ?? false } });
    this.tokenState = null;
    this.onTokens?.(null);
  }
  /** This user's profile: `{user_id, display_name, avatar, username, created_at}`. */
  me() {
    return this.request("GET", "/v1/me");
  }
  /** Changes this user's display name and/or avatar; returns the profile. */
  updateMe(changes) {
    return this.request("PATCH", "/v1/me", { json: changes });
  }
  /** Profiles of up to 500 users (unknown ids are left out). */
  async users(ids) {
    return (await this.request("GET", "/v1/users", { params: { ids: ids.join(",") } }))["items"];
  }
  // ------------------------------------------------------------------ push targets
  /**
   * Registers where notifications reach `device` (the `device` of `FlareClient`): `provider` `"apns"`,
   * `"fcm"` or `"webpush"` (token: the subscription endpoint; `keys: {p256dh, auth}` required). Replaces the
   * device's previous registration; returns the push target. For Web Push, `subscribeWebPush` does it all.
   */
  registerPush(device, provider, token, options = {}) {
    const json = { provider, token, app_id: options.appId ?? "", keys: options.keys, locale: options.locale };
    return this.request("PUT", `/v1/me/devices/${encodeURIComponent(device)}/push`, { json });
  }
  /** Stops notifications to `device` (call it at logout); fine when nothing was registered. */
  async unregisterPush(device) {
    await this.request("DELETE", `/v1/me/devices/${encodeURIComponent(device)}/push`);
  }
  /** The push targets of this user's devices. */
  async devices() {
    return (await this.request("GET", "/v1/me/devices"))["items"];
  }
  // ------------------------------------------------------------------ groups
  /** Creates a group owned by this user; returns `{group_id, conv, name, ...}` (`conv` is `"g:<group_id>"`). */
  createGroup(name, members, options = {}) {
    const json = { name, members, group_id: options.groupId, avatar: options.avatar };
    return this.request("POST", "/v1/groups", { json });
  }
  group(groupId) {
    return this.request("GET", `/v1/groups/${encodeURIComponent(groupId)}`);
  }
  /** Owner or admin: change the name and/or avatar. */
  updateGroup(groupId, changes) {
    return this.request("PATCH", `/v1/groups/${encodeURIComponent(groupId)}`, { json: changes });
  }
  async groupMembers(groupId) {
    return (await this.request("GET", `/v1/groups/${encodeURIComponent(groupId)}/members`))["items"];
  }
  /** Owner or admin: add users; returns those newly added. */
  async addMembers(groupId, userIds) {
    const out = await this.request("POST", `/v1/groups/${encodeURIComponent(groupId)}/members`, { json: { user_ids: userIds } });
    return out["added"];
  }
  async removeMember(groupId, userId) {
    await this.request("DELETE", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`);
  }
  async leaveGroup(groupId) {
    await this.request("POST", `/v1/groups/${encodeURIComponent(groupId)}/leave`);
  }
  /** Owner only: `"admin"`, `"member"`, or `"owner"` (transfers ownership). */
  async setRole(groupId, userId, role) {
    await this.request("PUT", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}/role`, {
      json: { role }
    });
  }
  // ------------------------------------------------------------------ messages
  /**
   * Sends a message as this user (bots, backends): the WebSocket's send path and idempotency key, so a
   * retry with the same `cmid` stores it once. Not retried here. Returns `{conv, seq, msg_id, ts, duplicate}`.
   */
  sendMessage(conv, cmid, body, kind = "text") {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(conv)}/messages`, { json: { cmid, kind, body } });
  }
  /** A page of messages, as `FlareClient.pull`: `{conv, items, max_seq, min_seq, more}`. */
  history(conv, options = {}) {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(conv)}/messages`, {
      params: { after: options.after, before: options.before, limit: options.limit ?? 50 }
    });
  }
  /** Edit history of message `seq`: `{message, revisions: [{version, body, ts}]}`, oldest first. */
  revisions(conv, seq) {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(conv)}/messages/${seq}/revisions`);
  }
  /** One page of the conversation list changed since `since`: `{items, version, more}`. */
  conversations(since = 0, limit = 100) {
    return this.request("GET", "/v1/conversations", { params: { since, limit } });
  }
  // ------------------------------------------------------------------ admin (X-Admin-Key)
  /** Admin: create a user (a business backend that owns the accounts). Throws 409 if the id exists. */
  adminCreateUser(userId, options = {}) {
    const json = { user_id: userId, display_name: options.displayName ?? "", avatar: options.avatar ?? "" };
    return this.request("POST", "/v1/admin/users", { json, admin: true });
  }
  /** Admin: create up to 1000 users; returns `{created, existing}`. */
  adminImportUsers(userIds) {
    return this.request("POST", "/v1/admin/users:batch", { json: { users: userIds.map((u) => ({ user_id: u })) }, admin: true });
  }
  /** Admin: an access token for `userId`, valid `ttlS` seconds (default: the server's). */
  async adminIssueToken(userId, ttlS) {
    const json = ttlS ? { ttl_s: ttlS } : void 0;
    return (await this.request("POST", `/v1/admin/users/${encodeURIComponent(userId)}/tokens`, { json, admin: true }))["access_token"];
  }
  /** Admin: access tokens for up to 1000 users, `{user_id: token}`. */
  async adminIssueTokens(userIds, ttlS) {
    return (await this.request("POST", "/v1/admin/tokens", { json: { user_ids: userIds, ttl_s: ttlS }, admin: true }))["tokens"];
  }
  /** Admin: revoke every token of a user. */
  async adminRevokeUser(userId) {
    await this.request("POST", `/v1/admin/users/${encodeURIComponent(userId)}/revoke`, { admin: true });
  }
};
async function errorOf(resp) {
  const text = await resp.text();
  try {
    const err = JSON.parse(text)["error"];
    if (typeof err?.code === "number") return new FlareError(err.code, err.message, err.retryable === true, err.detail ?? null);
  } catch {
  }
  const code = resp.status >= 500 ? ErrorCode.INTERNAL : resp.status;
  return new FlareError(code, `HTTP ${resp.status}: ${text.slice(0, 200)}`, resp.status >= 500);
}

// src/client.ts
var FlareClient = class _FlareClient {
  /** The access token, or a function giving one for each (re)connect (`RestClient.tokenProvider()`). */
  token;
  url;
  device;
  /** Whether a drop is followed by a reconnect (may be changed at any time). */
  reconnect;
  echoOwn;
  onFrame;
  /** The authenticated user id ("" before the first `auth_ok`). */
  user = "";
  session = "";
  /** The conversation-list version of the last sync. */
  version = 0;
  /** Server clock minus this clock, in ms, as of the last `auth_ok`. */
  skewMs = 0;
  lastCloseCode = null;
  lastKick = null;
  /** Successful reconnects so far. */
  reconnects = 0;
  /** The outbox, or null with `outbox: false`. */
  outbox;
  codec;
  requestTimeoutMs;
  initialBackoffMs;
  maxBackoffMs;
  attempts;
  platform;
  WS;
  livenessOption;
  ws = null;
  isConnected = false;
  closing = false;
  reconnecting = false;
  tokenRejected = false;
  nextId = 1;
  pending = /* @__PURE__ */ new Map();
  connectedWaiters = [];
  ordering = new Ordering();
  fills = /* @__PURE__ */ new Map();
  refill = /* @__PURE__ */ new Set();
  sleeping = null;
  liveness = null;
  livenessMs = 0;
  lastInbound = 0;
  streams;
  constructor(url, token, device, options = {}) {
    this.url = url;
    this.token = token;
    this.device = device;
    this.codec = options.codec ?? codecFor(options.encoding ?? "json");
    this.requestTimeoutMs = options.requestTimeoutMs ?? 1e4;
    this.reconnect = options.reconnect ?? true;
    this.initialBackoffMs = options.initialBackoffMs ?? 50;
    this.maxBackoffMs = options.maxBackoffMs ?? 5e3;
    this.attempts = options.attempts ?? 8;
    this.platform = options.platform ?? "js";
    this.echoOwn = options.echoOwn ?? false;
    this.onFrame = options.onFrame;
    this.livenessOption = options.livenessMs;
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (WS === void 0) {
      throw new TypeError(
        "no WebSocket: pass options.WebSocket (e.g. the ws package), or run Node 20 with --experimental-websocket"
      );
    }
    this.WS = WS;
    const limit = options.maxQueued ?? 1e4;
    this.streams = {
      message: new Stream("message", limit),
      receipt: new Stream("receipt", limit),
      typing: new Stream("typing notice", Math.min(limit, 1e3)),
      presence: new Stream("presence change", limit),
      settings: new Stream("settings change", limit),
      hidden: new Stream("hidden change", limit),
      outbox: new Stream("outbox event", 0),
      // replaced by the outbox's own stream below
      connected: new Stream("connection", 0),
      disconnected: new Stream("disconnection", 0)
    };
    const store = options.outbox === void 0 ? defaultOutboxStore(`flare-outbox:${device}`) : options.outbox;
    this.outbox = store === false ? null : new Outbox(store, this.outboxTransport(), options.idempotencyWindowMs ?? 24e4, limit);
    if (this.outbox !== null) this.streams.outbox = this.outbox.events;
  }
  /** A client for the user of `rest`: the gateway from `GET /v1/gateways`, tokens from `rest` (refreshed). */
  static async fromRest(rest, device, options = {}) {
    const [url] = await rest.gateways();
    if (url === void 0) throw new ConnectError("the server lists no WebSocket gateway");
    return new _FlareClient(url, rest.tokenProvider(), device, options);
  }
  // ------------------------------------------------------------------ lifecycle
  /**
   * Opens the WebSocket and authenticates; returns `auth_ok`. Throws `FlareError` 401 for a bad or expired
   * token (503 while the server shuts down) and `ConnectError` if the server cannot be reached; the first
   * connect is not retried. Then sends what the outbox holds. It does not sync: call `catchUp()`.
   */
  async connect() {
    this.closing = false;
    const ok = await this.open();
    void this.outbox?.flush().catch(() => void 0);
    return ok;
  }
  async resolveToken() {
    const rejected = this.tokenRejected;
    this.tokenRejected = false;
    return typeof this.token === "function" ? await this.token(rejected) : this.token;
  }
  async open() {
    const token = await this.resolveToken();
    const ws = new this.WS(this.url, [`flare.v1.${this.codec.encoding}`]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new ConnectError(`no WebSocket connection within ${this.requestTimeoutMs} ms`)), this.requestTimeoutMs);
        ws.onopen = () => {
          clearTimeout(timer);
          resolve();
        };
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
      }
      throw err;
    }
    ws.onmessage = (ev) => this.onData(ws, ev.data);
    ws.onclose = (ev) => this.onClosed(ws, ev.code);
    ws.onerror = () => void 0;
    this.lastCloseCode = null;
    this.lastInbound = Date.now();
    let reply;
    try {
      const frame = { type: "auth", id: this.nextId++, token, device: this.device, platform: this.platform };
      reply = payload(await this.request(frame, { requireConnected: false }));
    } catch (err) {
      if (err instanceof FlareError && err.code === ErrorCode.UNAUTHORIZED) this.tokenRejected = true;
      if (this.ws === ws) this.ws = null;
      ws.close(1e3);
      throw err;
    }
    this.user = reply.user;
    this.session = reply.session;
    this.skewMs = reply.server_ts - Date.now();
    this.livenessMs = this.livenessOption ?? reply.heartbeat_s * 1e3;
    this.isConnected = true;
    for (const w of this.connectedWaiters.splice(0)) w.resolve();
    this.armLiveness();
    this.streams.connected.push(reply);
    return reply;
  }
  /** Closes for good (no reconnect); pending requests fail with `Disconnected`. */
  async close() {
    this.closing = true;
    this.sleeping?.wake();
    const ws = this.ws;
    this.detach(null);
    for (const w of this.connectedWaiters.splice(0)) w.reject(new Disconnected("client closed"));
    if (ws !== null) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 5e3);
        ws.onclose = () => {
          clearTimeout(timer);
          resolve();
        };
        try {
          ws.close(1e3);
        } catch {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  }
  /** Cuts the connection as a network failure would (no waiting for a close handshake); tests use it. */
  dropConnection() {
    const ws = this.ws;
    if (ws === null) return;
    this.onClosed(ws, 1006);
    try {
      ws.onclose = null;
      ws.close(4e3, "dropped");
    } catch {
    }
  }
  /** Authenticated and usable now (false while reconnecting and after `close`). */
  get connected() {
    return this.isConnected;
  }
  /** Resolves once connected (e.g. after a drop, for the reconnect); rejects with `TimeoutError`. */
  waitConnected(timeoutMs = this.requestTimeoutMs) {
    if (this.isConnected) return Promise.resolve();
    if (this.closing) return Promise.reject(new Disconnected("client closed"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        }
      };
      const timer = setTimeout(() => {
        this.connectedWaiters = this.connectedWaiters.filter((w) => w !== waiter);
        reject(new TimeoutError(`not connected within ${timeoutMs} ms`));
      }, timeoutMs);
      this.connectedWaiters.push(waiter);
    });
  }
  /** Listens to a stream of pushes or state changes; returns the function that stops listening. */
  on(event, listener) {
    return this.streams[event].on(listener);
  }
  /** Forgets the socket and fails what waits on it; returns whether it was authenticated. */
  detach(code) {
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
  onClosed(ws, code) {
    if (ws !== this.ws) return;
    this.lastCloseCode = code;
    const was = this.detach(code);
    const kick = this.lastKick;
    if (!was || this.closing || !this.reconnect || this.reconnecting) return;
    if (kick !== null && !kick.reconnect) return;
    if (code === CloseCode.REPLACED) return;
    if (code === CloseCode.AUTH_FAILED && typeof this.token !== "function") return;
    void this.reconnectLoop();
  }
  async reconnectLoop() {
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
        }
        void this.outbox?.flush().catch(() => void 0);
        if (this.isConnected) return;
        delay = this.initialBackoffMs;
      }
    } finally {
      this.reconnecting = false;
    }
  }
  sleep(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeping = null;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeping = { timer, wake };
    });
  }
  armLiveness() {
    if (this.livenessMs <= 0) return;
    const check = () => {
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
        }
      );
    };
    this.liveness = unref(setTimeout(check, this.livenessMs));
  }
  // ------------------------------------------------------------------ requests
  request(frame, options = {}) {
    const send = () => {
      const ws = this.ws;
      if (ws === null) return Promise.reject(new Disconnected("not connected"));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(frame.id);
          reject(new TimeoutError(`no reply to ${frame.type} within ${this.requestTimeoutMs} ms`));
        }, this.requestTimeoutMs);
        this.pending.set(frame.id, {
          resolve: (reply) => {
            clearTimeout(timer);
            if (reply.type !== "error") return resolve(reply);
            const e = reply;
            reject(new FlareError(e.code, e.message, e.retryable, e.detail));
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          }
        });
        try {
          ws.send(this.codec.encode(frame));
        } catch (err) {
          this.pending.delete(frame.id);
          clearTimeout(timer);
          reject(new Disconnected(`send failed: ${err.message}`));
        }
      });
    };
    if (options.requireConnected === false || this.isConnected) return send();
    return this.waitConnected().then(send);
  }
  async call(type, fields = {}) {
    return payload(await this.request({ type, id: this.nextId++, ...fields }));
  }
  /** Sends the frame `make()` builds (the same idempotency key each time) until it is answered. */
  async retrying(make, attempts) {
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
  async send(conv, content, options = {}) {
    const body = typeof content === "string" ? { text: content } : content;
    const cmid = options.cmid ?? newId();
    const kind = options.kind ?? "text";
    const reply = await this.retrying(
      () => ({ type: "send", id: this.nextId++, conv, cmid, kind, body }),
      options.attempts ?? this.attempts
    );
    const ack = payload(reply);
    this.own(conv, ack.seq);
    return ack;
  }
  /**
   * Writes a message to the outbox and sends it when connected (now, or after a reconnect or a reload), once.
   * Resolves with the entry as soon as it is stored; `outbox.settled(entry.cmid)` resolves with its ack, and
   * `on("outbox", ...)` tells what happens to every entry. Throws if the client has no outbox.
   */
  async enqueue(conv, content, options = {}) {
    if (this.outbox === null) throw new TypeError("this client has no outbox (options.outbox is false)");
    const body = typeof content === "string" ? { text: content } : content;
    return this.outbox.enqueue(conv, body, options.kind ?? "text", options.cmid ?? newId());
  }
  outboxTransport() {
    const client = this;
    return {
      get user() {
        return client.user;
      },
      get connected() {
        return client.isConnected;
      },
      sendEntry: (entry) => this.send(entry.conv, entry.body, { kind: entry.kind, cmid: entry.cmid }),
      findStored: (entry) => this.findStored(entry)
    };
  }
  /** Looks for this user's message `entry.cmid` in the newest pages of its conversation, back to a minute
   * before its first attempt (server clock). */
  async findStored(entry) {
    const since = entry.firstAttemptAt + this.skewMs - 6e4;
    let before;
    for (let page = 0; page < 25; page++) {
      const got = await this.pull(entry.conv, { before, limit: 200 });
      for (const m of got.items) {
        if (m.sender === this.user && m.cmid === entry.cmid) {
          this.own(m.conv, m.seq);
          return { id: 0, conv: m.conv, seq: m.seq, msg_id: m.msg_id, ts: m.ts, duplicate: true, target: 0, version: 0, body: null };
        }
      }
      const first = got.items[0];
      if (!got.more || first === void 0 || first.ts < since) return null;
      before = first.seq;
    }
    return null;
  }
  /** Sends `text` quoting message `seq` (the server puts a snapshot of it in `body.reply_to`). */
  reply(conv, seq, text, options = {}) {
    return this.send(conv, { text, reply_to: { seq } }, options);
  }
  /**
   * Applies `op` (`recall`, `delete`, `edit`, `react`, `unreact`) to message `seq`; retries reuse the op id.
   * Resolves with the `Ack` of the operation's event (its own `seq`), with `target` and the target's `version`
   * afterwards. Errors (`FlareError`, not retried): 403, 404, 409 (`detail`: the current version), 410, 422.
   */
  async operate(conv, seq, op, options = {}) {
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
        emoji: options.emoji
      }),
      options.attempts ?? this.attempts
    );
    const ack = payload(reply);
    this.own(conv, ack.seq);
    return ack;
  }
  /** Recalls message `seq` for everyone (its sender within `recall_window_s`; group owners and admins). */
  recall(conv, seq, options = {}) {
    return this.operate(conv, seq, "recall", options);
  }
  /** Deletes message `seq` for everyone (the same rules as recall). */
  delete(conv, seq, options = {}) {
    return this.operate(conv, seq, "delete", options);
  }
  /** Replaces the text of this user's text message `seq`, made from version `baseVersion`; 409 if stale. */
  edit(conv, seq, text, baseVersion, options = {}) {
    return this.operate(conv, seq, "edit", { ...options, body: { text }, baseVersion });
  }
  /** Adds this user's `emoji` reaction to message `seq` (`remove: true` takes it back); 409 if already so. */
  react(conv, seq, emoji, options = {}) {
    return this.operate(conv, seq, options.remove ? "unreact" : "react", { ...options, emoji });
  }
  /** Hides message `seq` from this user on all of its devices; resolves with the `Hidden` change (which, with
   * `echoOwn`, also goes to this device's hidden stream). */
  async deleteForMe(conv, seq, options = {}) {
    const opid = newId();
    const reply = await this.retrying(
      () => ({ type: "op", id: this.nextId++, conv, op: "delete_for_me", target: seq, opid }),
      options.attempts ?? this.attempts
    );
    const hidden = payload(reply);
    if (this.echoOwn) this.streams.hidden.push(hidden);
    return hidden;
  }
  /** Copies messages `seqs` of `conv` into `to`: one as it is, several merged (titled `title`). */
  async forward(conv, seqs, to, options = {}) {
    const cmid = options.cmid ?? newId();
    const reply = await this.retrying(
      () => ({ type: "forward", id: this.nextId++, conv, seqs, to, cmid, title: options.title ?? "" }),
      options.attempts ?? this.attempts
    );
    const ack = payload(reply);
    this.own(ack.conv, ack.seq);
    return ack;
  }
  /** This device stored `seq`: skip it in the stream, or (echoOwn) pull it into the stream. */
  own(conv, seq) {
    if (!this.echoOwn) return this.seen(conv, seq, null);
    this.ordering.want(conv, seq);
    if (seq > this.ordering.localMax(conv)) void this.fill(conv).catch(() => void 0);
  }
  /** Marks everything up to `seq` as read; the user's other devices (and a direct peer) get a receipt. */
  async read(conv, seq) {
    await this.call("read", { conv, seq });
  }
  /** Reports that this device has everything up to `seq`; a direct peer gets a `delivered` receipt. */
  async delivered(conv, seq) {
    await this.call("delivered", { conv, seq });
  }
  /** Who has read message `seq`: `read` and `unread` member ids (without the sender and later joiners). */
  readers(conv, seq) {
    return this.call("readers", { conv, seq });
  }
  /** Watches these users' presence (replaces the list; `[]` stops); resolves with their current states. */
  async watchPresence(users) {
    return (await this.call("presence", { users })).items;
  }
  /** Changes this user's settings of `conv` (only the fields given); resolves with the resulting settings. */
  updateSettings(conv, change) {
    const { clearTo, ...flags } = change;
    return this.call("settings", { conv, ...flags, clear_to: clearTo });
  }
  /** Tells the other members of `conv` that this user is typing (at most one notice per 2 s is forwarded). */
  async typing(conv) {
    await this.call("typing", { conv });
  }
  /** Round trip to the server; resolves with its time in epoch ms. */
  async ping() {
    return (await this.call("ping")).ts;
  }
  /**
   * Every conversation changed since list version `since` (default: the last sync's, 0 at first), following
   * pages of `page`; with `recent` (0-50) each with its newest messages. Remembers the new version;
   * `hidden_seqs` also go to the hidden stream. Does not pull messages (`catchUp` does). Not retried.
   */
  async sync(since, options = {}) {
    let version = since ?? this.version;
    const out = [];
    for (; ; ) {
      const reply = await this.call("sync", { since: version, limit: options.page ?? 100, recent: options.recent ?? 0 });
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
  async restore(options = {}) {
    const reply = await this.call("sync", { limit: options.first ?? 20, strategy: "fast", recent: options.recent ?? 20 });
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
  pull(conv, options = {}) {
    return this.call("pull", { conv, after: options.after, before: options.before, limit: options.limit ?? 50 });
  }
  /** Every message of `conv` this user may read with seq > `after`, ascending, in pages of `page`. */
  async history(conv, options = {}) {
    let after = options.after ?? 0;
    const out = [];
    for (; ; ) {
      const reply = await this.pull(conv, { after, limit: options.page ?? 200 });
      out.push(...reply.items);
      const last = reply.items[reply.items.length - 1];
      if (!reply.more || last === void 0) return out;
      after = last.seq;
    }
  }
  /** Syncs the list and pulls every conversation this client is behind on, into `messages()`. */
  async catchUp() {
    const changed = await this.sync();
    for (const summary of changed) if (!summary.left) this.ordering.want(summary.conv, summary.max_seq);
    for (const conv of this.ordering.behind()) await this.fill(conv);
    return changed;
  }
  /**
   * This device already holds what it needs of `conv` up to `seq` (an app that shows the newest page of each
   * conversation and loads older ones as the user scrolls): `messages()`, gap pulls and `catchUp()` go on from
   * there instead of from seq 1. Never moves back; messages held beyond `seq` come out of `messages()`.
   */
  startAfter(conv, seq) {
    for (const m of this.ordering.floor(conv, seq + 1)) this.streams.message.push(m);
  }
  /** The seq up to which this client has seen every message of `conv` (0 if none). */
  localMaxSeq(conv) {
    return this.ordering.localMax(conv);
  }
  // ------------------------------------------------------------------ incoming
  /** Incoming messages and events, forever: once each, in seq order per conversation. */
  messages() {
    return this.streams.message;
  }
  /** The next item of `messages()`; rejects with `TimeoutError` after `timeoutMs`. */
  nextMessage(timeoutMs = 1e4) {
    return this.streams.message.next(timeoutMs);
  }
  /** How many messages are queued for `nextMessage()`/`messages()`. */
  pendingMessages() {
    return this.streams.message.size;
  }
  /** The next read or delivered receipt (a peer's, or this user's on another device). */
  nextReceipt(timeoutMs = 1e4) {
    return this.streams.receipt.next(timeoutMs);
  }
  /** The next typing notice of another member (only the newest 1000 unread ones are kept). */
  nextTyping(timeoutMs = 1e4) {
    return this.streams.typing.next(timeoutMs);
  }
  /** The next presence change of a watched user. */
  nextPresence(timeoutMs = 1e4) {
    return this.streams.presence.next(timeoutMs);
  }
  /** The next settings change made on another of this user's devices. */
  nextSettings(timeoutMs = 1e4) {
    return this.streams.settings.next(timeoutMs);
  }
  /** Messages this user deleted for itself on another device (pushed, or found by a sync). */
  nextHidden(timeoutMs = 1e4) {
    return this.streams.hidden.next(timeoutMs);
  }
  onData(ws, data) {
    if (ws !== this.ws) return;
    this.lastInbound = Date.now();
    let frame;
    try {
      frame = withDefaults(this.codec.decode(data));
    } catch {
      return;
    }
    this.onFrame?.(frame);
    const id = frame["id"];
    switch (frame.type) {
      case "msg":
        return this.seen(String(frame["conv"]), Number(frame["seq"]), toMessage(frame));
      case "receipt":
        return this.streams.receipt.push(payload(frame));
      case "typing":
        return this.streams.typing.push(payload(frame));
      case "presence":
        return this.streams.presence.push(payload(frame));
      case "kick":
        this.lastKick = payload(frame);
        return;
      case "conv_settings":
        if (id === null) return this.streams.settings.push(payload(frame));
        break;
      case "hidden":
        if (id === null) return this.streams.hidden.push(payload(frame));
        break;
    }
    if (typeof id === "number") {
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve(frame);
    }
  }
  seen(conv, seq, message) {
    for (const m of this.ordering.seen(conv, seq, message)) this.streams.message.push(m);
    if (this.ordering.needsPull(conv)) void this.fill(conv).catch(() => void 0);
  }
  /** Pulls `conv` from its first missing seq until the gap is closed; one pull loop per conversation. */
  fill(conv) {
    const running = this.fills.get(conv);
    if (running !== void 0) {
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
  async fillOnce(conv) {
    for (; ; ) {
      let reply;
      try {
        reply = await this.pull(conv, { after: this.ordering.localMax(conv), limit: 200 });
      } catch (err) {
        const minSeq = err instanceof FlareError && err.code === ErrorCode.GONE ? err.detail?.["min_seq"] : void 0;
        if (typeof minSeq !== "number") throw err;
        for (const m of this.ordering.floor(conv, minSeq)) this.streams.message.push(m);
        continue;
      }
      const { ready, done } = this.ordering.page(conv, reply.items, reply.more);
      for (const m of ready) this.streams.message.push(m);
      if (done) return;
    }
  }
};
function unref(timer) {
  timer.unref?.();
  return timer;
}

// src/push.ts
async function subscribeWebPush(options) {
  if (typeof navigator === "undefined" || !("serviceWorker" in navigator) || typeof PushManager === "undefined") {
    throw new Error("this browser has no Push API");
  }
  if (typeof Notification !== "undefined" && Notification.permission !== "granted") {
    if (await Notification.requestPermission() !== "granted") throw new Error("notification permission was not granted");
  }
  const registration = options.registration ?? await navigator.serviceWorker.register(options.serviceWorkerUrl ?? "/flare-sw.js", { type: "module" });
  await navigator.serviceWorker.ready;
  const subscription = await registration.pushManager.getSubscription() ?? await registration.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: base64UrlToBytes(options.applicationServerKey)
  });
  const json = subscription.toJSON();
  const keys = json.keys ?? {};
  if (!json.endpoint || !keys["p256dh"] || !keys["auth"]) throw new Error("the push subscription has no endpoint or keys");
  return options.rest.registerPush(options.device, "webpush", json.endpoint, {
    keys: { p256dh: keys["p256dh"], auth: keys["auth"] },
    ...options.appId !== void 0 ? { appId: options.appId } : {},
    ...options.locale !== void 0 ? { locale: options.locale } : {}
  });
}
async function unsubscribeWebPush(options) {
  const registration = options.registration ?? await navigator.serviceWorker.getRegistration();
  await (await registration?.pushManager.getSubscription())?.unsubscribe();
  await options.rest.unregisterPush(options.device);
}
async function showPush(scope, push) {
  if (push.badge !== void 0) {
    await (push.badge > 0 ? scope.navigator?.setAppBadge?.(push.badge) : scope.navigator?.clearAppBadge?.());
  }
  if (push.silent) {
    if (push.tag) for (const n of await scope.registration.getNotifications({ tag: push.tag })) n.close();
    return;
  }
  await scope.registration.showNotification(push.title ?? "", {
    body: push.body ?? "",
    data: push.data,
    ...push.tag ? { tag: push.tag } : {}
  });
}
async function openFromPush(scope, notification, urlFor) {
  notification.close();
  const url = urlFor(notification.data ?? {});
  const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((w) => w.url.endsWith(url)) ?? windows[0];
  await (open ? open.focus() : scope.clients.openWindow(url));
}
function base64UrlToBytes(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - text.length % 4) % 4);
  const raw = atob(base64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
export {
  CloseCode,
  ConnectError,
  ConvOrder,
  ConversationView,
  Disconnected,
  ErrorCode,
  FlareClient,
  FlareError,
  IndexedDbOutboxStore,
  MemoryOutboxStore,
  Ordering,
  Outbox,
  PROTOCOL,
  RestClient,
  Stream,
  TimeoutError,
  VERSION,
  base64UrlToBytes,
  codecFor,
  defaultOutboxStore,
  directConv,
  jsonCodec,
  msgpackCodec,
  newId,
  openFromPush,
  packMsgpack,
  showPush,
  subscribeWebPush,
  toMessage,
  unpackMsgpack,
  unsubscribeWebPush,
  withDefaults
};
