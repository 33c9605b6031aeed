/**
 * In-order, once-only delivery per conversation (docs/protocol.md §6), as a sans-I/O object: the client feeds
 * it what it sees (pushes, its own acks, pulled pages) and it says which messages are ready, in seq order, and
 * when a gap must be pulled. It never waits or sends; tests drive it with plain calls.
 *
 * Per conversation it keeps `contiguous` (every seq up to it has been seen: yielded, or sent by this device),
 * the seqs seen beyond it (`ahead`, held until the gap before them is filled), whether a pull is running, and
 * `wanted` (a seq known to exist: the sync's `max_seq`, an own event to echo).
 */
import type { Message } from "./frames.js";

export class ConvOrder {
  /** Every seq up to this one has been seen. */
  contiguous = 0;
  /** Seen seqs beyond `contiguous`; null: this device's own message, not yielded. */
  readonly ahead = new Map<number, Message | null>();
  pulling = false;
  /** Pull at least up to this seq. */
  wanted = 0;
}

export interface PageResult {
  /** Messages now ready, in seq order. */
  ready: Message[];
  /** The gap is closed (or the server has nothing newer): stop pulling. */
  done: boolean;
}

export class Ordering {
  private readonly convs = new Map<string, ConvOrder>();

  /** The state of `conv`, created empty when unknown. */
  state(conv: string): ConvOrder {
    let s = this.convs.get(conv);
    if (s === undefined) {
      s = new ConvOrder();
      this.convs.set(conv, s);
    }
    return s;
  }

  /** The seq up to which every message of `conv` has been seen (0 if none). */
  localMax(conv: string): number {
    return this.convs.get(conv)?.contiguous ?? 0;
  }

  /**
   * Seq `seq` of `conv` was seen: a pushed `message`, or (null) one this device stored itself. Returns the
   * messages that became ready, in order; a duplicate returns nothing. Check {@link needsPull} afterwards.
   */
  seen(conv: string, seq: number, message: Message | null): Message[] {
    const s = this.state(conv);
    if (seq <= s.contiguous || s.ahead.has(seq)) return [];
    s.ahead.set(seq, message);
    return advance(s);
  }

  /** Something is held beyond a gap and no pull is running: start one (and set `pulling`). */
  needsPull(conv: string): boolean {
    const s = this.convs.get(conv);
    return s !== undefined && s.ahead.size > 0 && !s.pulling;
  }

  /** Seq `seq` of `conv` exists (a sync's `max_seq`, an own event to echo): pull up to it. */
  want(conv: string, seq: number): void {
    const s = this.state(conv);
    s.wanted = Math.max(s.wanted, seq);
  }

  /** Whether `conv` is known to be behind: something wanted or held beyond what was seen. */
  isBehind(conv: string): boolean {
    const s = this.convs.get(conv);
    return s !== undefined && (s.wanted > s.contiguous || s.ahead.size > 0);
  }

  /** Every conversation that {@link isBehind}. */
  behind(): string[] {
    return [...this.convs.keys()].filter((c) => this.isBehind(c));
  }

  /**
   * A page pulled with `after` = `contiguous`, ascending. A first item beyond `contiguous + 1` means the seqs
   * before it are not readable (below the user's floor, or a seq skipped by a failed write): they are passed.
   */
  page(conv: string, items: readonly Message[], more: boolean): PageResult {
    const s = this.state(conv);
    const first = items[0];
    if (first !== undefined && first.seq > s.contiguous + 1) this.skipTo(s, first.seq - 1);
    for (const m of items) {
      if (m.seq > s.contiguous && !s.ahead.has(m.seq)) s.ahead.set(m.seq, m);
    }
    const ready = advance(s);
    const done = items.length === 0 || (!more && s.ahead.size === 0 && s.contiguous >= s.wanted);
    return { ready, done };
  }

  /** History below `minSeq` is gone for this user (a 410): resume from there. Returns what became ready. */
  floor(conv: string, minSeq: number): Message[] {
    const s = this.state(conv);
    if (minSeq - 1 > s.contiguous) this.skipTo(s, minSeq - 1);
    return advance(s);
  }

  private skipTo(s: ConvOrder, seq: number): void {
    s.contiguous = seq;
    for (const held of [...s.ahead.keys()]) if (held <= seq) s.ahead.delete(held);
  }
}

function advance(s: ConvOrder): Message[] {
  const ready: Message[] = [];
  while (s.ahead.has(s.contiguous + 1)) {
    s.contiguous += 1;
    const m = s.ahead.get(s.contiguous);
    s.ahead.delete(s.contiguous);
    if (m) ready.push(m);
  }
  return ready;
}
