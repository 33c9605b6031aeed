/**
 * The frames of docs/protocol.md §3-4 as TypeScript types, with the wire's field names (snake_case), so that
 * protocol.md's tables describe them exactly. The server leaves out fields at their default; {@link withDefaults}
 * fills them in, so every object the SDK hands out is complete.
 */

/** A message body: app-defined content checked by the server against the message's kind. */
export type Body = Record<string, unknown>;

/** A message in its state as stored, or as it is now (pulls): `msg` pushes without `type`, `messages.items`. */
export interface Message {
  conv: string;
  /** Position in the conversation: the only ordering key. */
  seq: number;
  /** 64-bit snowflake as a decimal string: an opaque key, not an ordering. */
  msg_id: string;
  sender: string;
  /** The sender's client message id (the op id for operation events, `sys-…` for system messages). */
  cmid: string;
  kind: string;
  body: Body;
  /** Store time, epoch ms (display only). */
  ts: number;
  /** 1 when sent, +1 for each edit, recall or delete. */
  version: number;
  /** `""`, `"recalled"`, `"deleted"`, or `"hidden"` (deleted for this user: a tombstone). */
  state: "" | "recalled" | "deleted" | "hidden";
  edited_at: number;
  /** Emoji → user ids, in the order they reacted. */
  reactions: Record<string, string[]>;
}

export interface Ack {
  id: number;
  conv: string;
  seq: number;
  msg_id: string;
  ts: number;
  /** True when the request was a retry of something already stored: the fields describe the original. */
  duplicate: boolean;
  /** Operations: the seq of the changed message (0 otherwise). */
  target: number;
  /** Operations: that message's version afterwards (0 otherwise, and in the duplicate ack of a reaction). */
  version: number;
  /** The body as stored, when the content filter masked part of what was sent; null otherwise. */
  body: Body | null;
}

export interface AuthOk {
  id: number;
  user: string;
  device: string;
  session: string;
  server_ts: number;
  heartbeat_s: number;
}

export interface ConvSummary {
  conv: string;
  kind: "direct" | "group";
  version: number;
  max_seq: number;
  read_seq: number;
  unread: number;
  unread_mentions: number;
  member_count: number;
  name: string;
  avatar: string;
  peer: string;
  role: string;
  join_seq: number;
  left: boolean;
  pinned: boolean;
  muted: boolean;
  hidden: boolean;
  draft: string;
  cleared_seq: number;
  last: Message | null;
  recent: Message[];
  hidden_seqs: number[];
}

export interface Convs {
  id: number;
  items: ConvSummary[];
  version: number;
  more: boolean;
}

export interface Messages {
  id: number;
  conv: string;
  items: Message[];
  max_seq: number;
  min_seq: number;
  more: boolean;
}

export interface Receipt {
  conv: string;
  user: string;
  kind: "read" | "delivered";
  seq: number;
  device: string;
}

export interface TypingNotice {
  conv: string;
  user: string;
  device: string;
}

export interface PresenceState {
  user: string;
  online: boolean;
  /** Epoch ms when the user's last connection closed; 0 while online or unknown. */
  last_seen: number;
}

export interface ConvSettings {
  /** The `settings` request id in the reply to the device that made the change; null in pushes. */
  id: number | null;
  conv: string;
  version: number;
  pinned: boolean;
  muted: boolean;
  hidden: boolean;
  draft: string;
  cleared_seq: number;
}

export interface Hidden {
  id: number | null;
  conv: string;
  seqs: number[];
  version: number;
}

export interface ReadersList {
  id: number;
  conv: string;
  seq: number;
  read: string[];
  unread: string[];
}

export interface Kick {
  code: number;
  reason: string;
  reconnect: boolean;
  retry_after_ms: number;
}

export interface ErrorFrame {
  id: number | null;
  code: number;
  message: string;
  retryable: boolean;
  detail: Record<string, unknown> | null;
}

/** Any decoded server frame: `type` names it. */
export type ServerFrame = { type: string; [field: string]: unknown };

/** A client frame (a request): `type` and `id`, then its fields; `undefined` fields are not sent. */
export type ClientFrame = { type: string; id: number; [field: string]: unknown };

/** `raw`'s fields, then each default that `raw` leaves out (fresh copies of object defaults). */
function fill(raw: Record<string, unknown>, defaults: Record<string, unknown>): Record<string, unknown> {
  const out = { ...raw };
  for (const [k, v] of Object.entries(defaults)) {
    if (!(k in out)) out[k] = Array.isArray(v) ? [] : v !== null && typeof v === "object" ? {} : v;
  }
  return out;
}

const MESSAGE_DEFAULTS = { cmid: "", body: {}, version: 1, state: "", edited_at: 0, reactions: {} };

/** A `Message` with the omitted defaults filled in (a `msg` push's `type` dropped). */
export function toMessage(raw: Record<string, unknown>): Message {
  const { type: _type, ...fields } = raw;
  return fill(fields, MESSAGE_DEFAULTS) as unknown as Message;
}

function toSummary(raw: Record<string, unknown>): ConvSummary {
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
    hidden_seqs: [],
  }) as unknown as ConvSummary;
  if (s.last) s.last = toMessage(s.last as unknown as Record<string, unknown>);
  s.recent = s.recent.map((m) => toMessage(m as unknown as Record<string, unknown>));
  return s;
}

const DEFAULTS: Record<string, Record<string, unknown>> = {
  ack: { duplicate: false, target: 0, version: 0, body: null },
  convs: { more: false },
  messages: { more: false },
  receipt: { device: "" },
  typing: { device: "" },
  presence: { last_seen: 0 },
  conv_settings: { id: null, pinned: false, muted: false, hidden: false, draft: "", cleared_seq: 0 },
  hidden: { id: null },
  kick: { reconnect: true, retry_after_ms: 0, reason: "" },
  error: { id: null, retryable: false, detail: null },
};

/** The frame with every omitted field at its protocol default, nested messages and summaries included. */
export function withDefaults(frame: ServerFrame): ServerFrame {
  const out = fill(frame, DEFAULTS[frame.type] ?? {}) as ServerFrame;
  if (frame.type === "convs") out.items = (frame.items as Record<string, unknown>[]).map(toSummary);
  else if (frame.type === "messages") out.items = (frame.items as Record<string, unknown>[]).map(toMessage);
  else if (frame.type === "presence_list") {
    out.items = (frame.items as Record<string, unknown>[]).map((p) => fill(p, { last_seen: 0 }));
  }
  return out;
}

/** Strips the `type` and keeps the rest: a reply frame as the object a call returns. */
export function payload<T>(frame: ServerFrame): T {
  const { type: _type, ...rest } = frame;
  return rest as T;
}
