/**
 * A local copy of conversations, kept current by applying the message stream in seq order (no I/O).
 *
 * Feed it every message `FlareClient.messages()` yields (with `echoOwn: true` that includes this device's own
 * events) and every {@link Hidden} of `nextHidden()`. Operation events (recall, delete, edit, react, unreact)
 * change their target the way the server's log does (docs/protocol.md §8, "Applying events on a client"), so a
 * device that was offline, or pulled a target already in its newer state, converges to the server's history.
 * Applying an event twice changes nothing.
 */
import type { Body, Hidden, Message } from "./frames.js";

const GONE_STATE: Record<string, "recalled" | "deleted"> = { recall: "recalled", delete: "deleted" };
const EVENTS = new Set(["recall", "delete", "edit", "react", "unreact"]);
const EDIT_REFS = ["target", "target_id", "version"]; // what an edit event keeps once its target is gone
const QUOTE_REFS = ["seq", "msg_id", "sender", "kind"]; // what a quote keeps of a message that is gone

export class ConversationView {
  /** conv → seq → message in its current state (operation events are kept at their own seqs too). */
  readonly messages = new Map<string, Map<number, Message>>();
  /** conv → seqs this user deleted for itself. */
  readonly hidden = new Map<string, Set<number>>();

  /**
   * Adds a message or an operation event; an event also changes its target: recall and delete empty it (and
   * scrub the quotes and edit events of it), edit replaces its body when newer, react and unreact change its
   * reactions. Feed events in seq order per conversation; a seq already applied is ignored.
   */
  apply(event: Message): void {
    let conv = this.messages.get(event.conv);
    if (conv === undefined) {
      conv = new Map();
      this.messages.set(event.conv, conv);
    }
    if (conv.has(event.seq)) return;
    conv.set(event.seq, this.hidden.get(event.conv)?.has(event.seq) ? tombstone(event) : event);
    const targetSeq = event.body["target"];
    if (typeof targetSeq !== "number" || !EVENTS.has(event.kind)) return;
    const gone = GONE_STATE[event.kind];
    if (gone !== undefined) scrub(conv, targetSeq, gone); // even when the target itself is not held
    const target = conv.get(targetSeq);
    if (target === undefined || target.state !== "") return; // not held, gone, or deleted for me
    const version = typeof event.body["version"] === "number" ? event.body["version"] : target.version;
    if (gone !== undefined) {
      if (version > target.version) {
        conv.set(targetSeq, { ...target, body: {}, state: gone, reactions: {}, version, edited_at: 0 });
      }
    } else if (event.kind === "edit") {
      // An edit event without its body was pulled after a recall this device has not reached yet.
      const body = event.body["body"];
      if (version > target.version && isBody(body)) conv.set(targetSeq, { ...target, body, version, edited_at: event.ts });
    } else {
      const emoji = String(event.body["emoji"]);
      const current = target.reactions[emoji] ?? [];
      const users =
        event.kind === "react"
          ? current.includes(event.sender)
            ? current
            : [...current, event.sender]
          : current.filter((u) => u !== event.sender);
      const reactions = { ...target.reactions };
      if (users.length) reactions[emoji] = users;
      else delete reactions[emoji];
      conv.set(targetSeq, { ...target, reactions });
    }
  }

  /** Marks `hidden.seqs` as deleted for this user: held copies become tombstones, and so do later arrivals. */
  applyHidden(hidden: Pick<Hidden, "conv" | "seqs">): void {
    let seqs = this.hidden.get(hidden.conv);
    if (seqs === undefined) {
      seqs = new Set();
      this.hidden.set(hidden.conv, seqs);
    }
    const conv = this.messages.get(hidden.conv);
    for (const seq of hidden.seqs) {
      seqs.add(seq);
      const m = conv?.get(seq);
      if (m !== undefined && conv !== undefined) conv.set(seq, tombstone(m));
    }
  }

  /** What the user sees of `conv`: messages in seq order, deleted-for-me ones as `hidden` tombstones. */
  history(conv: string): Message[] {
    const held = this.messages.get(conv);
    if (held === undefined) return [];
    return [...held.keys()].sort((a, b) => a - b).map((seq) => held.get(seq) as Message);
  }

  /** One message of `conv` in its current state, if held. */
  get(conv: string, seq: number): Message | undefined {
    return this.messages.get(conv)?.get(seq);
  }
}

function isBody(v: unknown): v is Body {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function tombstone(m: Message): Message {
  return { ...m, body: {}, state: "hidden", reactions: {}, version: 1, edited_at: 0 };
}

function pick(body: Body, keys: string[]): Body {
  const out: Body = {};
  for (const k of keys) if (k in body) out[k] = body[k];
  return out;
}

/** `body` with its quote of `target` reduced to references plus `state`; null if it quotes something else. */
function unquoted(body: Body, target: number, state: string): Body | null {
  const quoted = body["reply_to"];
  if (!isBody(quoted) || quoted["seq"] !== target) return null;
  return { ...body, reply_to: { ...pick(quoted, QUOTE_REFS), state } };
}

/** The content of a recalled message goes from everything that carried it (the server does the same). */
function scrub(conv: Map<number, Message>, target: number, state: string): void {
  for (const [seq, m] of conv) {
    if (m.state === "hidden") continue;
    if (m.kind === "edit" && m.body["target"] === target) {
      conv.set(seq, { ...m, body: pick(m.body, EDIT_REFS) });
    } else if (m.kind === "edit" && isBody(m.body["body"])) {
      const edited = unquoted(m.body["body"], target, state); // an edit of a reply to it
      if (edited !== null) conv.set(seq, { ...m, body: { ...m.body, body: edited } });
    } else {
      const body = unquoted(m.body, target, state);
      if (body !== null) conv.set(seq, { ...m, body });
    }
  }
}
