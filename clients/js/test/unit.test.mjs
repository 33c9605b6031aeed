// Tests without a server: the MessagePack subset, in-order delivery (the sans-I/O Ordering, as
// tests/unit/test_sdk_ordering.py does for the Python SDK), the conversation view, streams and the outbox.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import "fake-indexeddb/auto";
import {
  ConversationView,
  FlareError,
  IndexedDbOutboxStore,
  MemoryOutboxStore,
  Ordering,
  Outbox,
  Stream,
  TimeoutError,
  directConv,
  packMsgpack,
  toMessage,
  unpackMsgpack,
  withDefaults,
} from "../dist/flare.js";

const message = (seq, extra = {}) =>
  toMessage({ conv: "d:a:b", seq, msg_id: String(1000 + seq), sender: "b", cmid: `c${seq}`, kind: "text", body: { text: `m${seq}` }, ts: 1, ...extra });

describe("msgpack", () => {
  test("round-trips every type and width the frames use", () => {
    const values = [
      null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
      -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1),
      0.5, -1.25, 25.0, 1e300, "", "a", "é🙂", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "x".repeat(70000),
      [], [1, [2, [3]]], Array.from({ length: 16 }, (_, i) => i), Array.from({ length: 70000 }, () => 0),
      {}, { type: "send", id: 3, body: { text: "hi", nested: { a: [1, "b", null] } } },
      Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])),
      new Uint8Array([1, 2, 3]), new Uint8Array(300), new Uint8Array(70000),
    ];
    for (const v of values) assert.deepEqual(unpackMsgpack(packMsgpack(v)), v);
  });

  test("encodes integers in their smallest form, as other encoders do", () => {
    assert.deepEqual([...packMsgpack(5)], [0x05]);
    assert.deepEqual([...packMsgpack(-5)], [0xfb]);
    assert.deepEqual([...packMsgpack(200)], [0xcc, 200]);
    assert.equal(packMsgpack(1796567650404441)[0], 0xcf);
    assert.deepEqual([...packMsgpack({ a: undefined, b: 1 })], [0x81, 0xa1, 0x62, 0x01]); // undefined fields are left out
  });

  test("refuses truncated input, trailing bytes and extension types", () => {
    assert.throws(() => unpackMsgpack(new Uint8Array([0x92, 0x01])), RangeError);
    assert.throws(() => unpackMsgpack(new Uint8Array([0x01, 0x02])), RangeError);
    assert.throws(() => unpackMsgpack(new Uint8Array([0xd4, 0x01, 0x00])), TypeError);
  });
});

describe("frames", () => {
  test("omitted fields come back at their defaults", () => {
    const ack = withDefaults({ type: "ack", id: 3, conv: "d:a:b", seq: 1, msg_id: "7", ts: 5 });
    assert.equal(ack.duplicate, false);
    assert.equal(ack.version, 0);
    assert.equal(ack.body, null);
    const m = message(1);
    assert.deepEqual([m.version, m.state, m.edited_at, m.reactions], [1, "", 0, {}]);
    const convs = withDefaults({ type: "convs", id: 1, version: 9, items: [{ conv: "d:a:b", kind: "direct", version: 9, max_seq: 1, read_seq: 0, unread: 1, member_count: 2, last: { ...m } }] });
    assert.equal(convs.more, false);
    assert.deepEqual([convs.items[0].left, convs.items[0].hidden_seqs, convs.items[0].last.version], [false, [], 1]);
  });

  test("directConv sorts the two ids", () => {
    assert.equal(directConv("bob", "alice"), "d:alice:bob");
    assert.equal(directConv("B", "a"), "d:B:a");
  });
});

describe("ordering", () => {
  test("in-order pushes are ready once each", () => {
    const o = new Ordering();
    const got = [];
    for (const seq of [1, 2, 2, 1, 3]) got.push(...o.seen("d:a:b", seq, message(seq)));
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3]);
    assert.equal(o.needsPull("d:a:b"), false);
    assert.equal(o.localMax("d:a:b"), 3);
  });

  test("a gap is pulled before later messages", () => {
    const o = new Ordering();
    const got = [...o.seen("d:a:b", 1, message(1)), ...o.seen("d:a:b", 5, message(5))];
    assert.deepEqual(got.map((m) => m.seq), [1]); // 5 is held: 2..4 are missing
    assert.equal(o.needsPull("d:a:b"), true);
    o.state("d:a:b").pulling = true;
    assert.equal(o.localMax("d:a:b"), 1); // the pull starts after it
    const page = o.page("d:a:b", [2, 3, 4, 5, 6].map((s) => message(s)), true);
    got.push(...page.ready);
    assert.equal(page.done, false); // more remain
    const last = o.page("d:a:b", [7, 8, 9, 10].map((s) => message(s)), false);
    got.push(...last.ready);
    assert.equal(last.done, true);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(o.seen("d:a:b", 7, message(7)), []); // a late push of something pulled is a duplicate
  });

  test("own acked messages are not yielded but close the gap", () => {
    const o = new Ordering();
    const got = [...o.seen("d:a:b", 1, message(1)), ...o.seen("d:a:b", 2, null), ...o.seen("d:a:b", 3, message(3))];
    assert.deepEqual(got.map((m) => m.seq), [1, 3]);
    assert.equal(o.localMax("d:a:b"), 3);
  });

  test("a page starting above the floor passes the unreadable seqs; a 410 floor drops what is below", () => {
    const o = new Ordering();
    o.want("g:x", 9);
    assert.deepEqual(o.behind(), ["g:x"]);
    const page = o.page("g:x", [5, 6].map((s) => message(s, { conv: "g:x" })), true);
    assert.deepEqual(page.ready.map((m) => m.seq), [5, 6]);
    assert.equal(page.done, false);
    o.seen("g:x", 12, message(12, { conv: "g:x" }));
    assert.deepEqual(o.floor("g:x", 12).map((m) => m.seq), [12]);
    assert.equal(o.localMax("g:x"), 12);
    assert.deepEqual(o.behind(), []);
  });
});

describe("conversation view", () => {
  const ev = (seq, kind, body, extra = {}) => message(seq, { kind, body, cmid: `op${seq}`, ...extra });

  test("applies edits, reactions and recalls, and applying again changes nothing", () => {
    const view = new ConversationView();
    const stream = [
      message(1, { sender: "a", body: { text: "hi" } }),
      message(2, { sender: "b", body: { text: "re", reply_to: { seq: 1, msg_id: "1001", sender: "a", kind: "text", snippet: "hi" } } }),
      ev(3, "edit", { target: 1, target_id: "1001", version: 2, body: { text: "hi!" } }, { sender: "a", ts: 33 }),
      ev(4, "react", { target: 1, target_id: "1001", emoji: "👍" }, { sender: "b" }),
      ev(5, "react", { target: 1, target_id: "1001", emoji: "👍" }, { sender: "c" }),
      ev(6, "unreact", { target: 1, target_id: "1001", emoji: "👍" }, { sender: "b" }),
    ];
    for (const m of stream) view.apply(m);
    let m1 = view.get("d:a:b", 1);
    assert.deepEqual([m1.body, m1.version, m1.edited_at, m1.reactions], [{ text: "hi!" }, 2, 33, { "👍": ["c"] }]);
    for (const m of stream) view.apply(m); // idempotent
    assert.deepEqual(view.get("d:a:b", 1), m1);

    view.apply(ev(7, "recall", { target: 1, target_id: "1001", version: 3 }, { sender: "a" }));
    m1 = view.get("d:a:b", 1);
    assert.deepEqual([m1.state, m1.body, m1.reactions, m1.version, m1.edited_at], ["recalled", {}, {}, 3, 0]);
    assert.deepEqual(view.get("d:a:b", 2).body.reply_to, { seq: 1, msg_id: "1001", sender: "a", kind: "text", state: "recalled" });
    assert.deepEqual(view.get("d:a:b", 3).body, { target: 1, target_id: "1001", version: 2 }); // the edit's text is gone
    assert.deepEqual(view.history("d:a:b").map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
  });

  test("a target already pulled in its newer state is not changed by older events", () => {
    const view = new ConversationView();
    view.apply(message(1, { body: { text: "v3" }, version: 3, edited_at: 50 }));
    view.apply(ev(2, "edit", { target: 1, target_id: "1001", version: 2, body: { text: "v2" } }));
    assert.equal(view.get("d:a:b", 1).body.text, "v3");
  });

  test("deleted-for-me messages are tombstones, also when they arrive later", () => {
    const view = new ConversationView();
    view.apply(message(1));
    view.applyHidden({ conv: "d:a:b", seqs: [1, 2] });
    view.apply(message(2));
    assert.deepEqual(view.history("d:a:b").map((m) => [m.state, m.body]), [["hidden", {}], ["hidden", {}]]);
    view.apply(ev(3, "react", { target: 2, emoji: "x" }));
    assert.deepEqual(view.get("d:a:b", 2).reactions, {});
  });
});

describe("stream", () => {
  test("listeners get every item; the queue keeps at most its limit; next() times out", async () => {
    const s = new Stream("thing", 2);
    const heard = [];
    const off = s.on((x) => heard.push(x));
    for (const x of [1, 2, 3]) s.push(x);
    off();
    s.push(4);
    assert.deepEqual(heard, [1, 2, 3]);
    assert.equal(s.dropped, 2);
    assert.deepEqual([await s.next(10), await s.next(10)], [3, 4]);
    await assert.rejects(s.next(10), TimeoutError);
    const waiting = s.next(1000);
    s.push(5);
    assert.equal(await waiting, 5);
  });
});

/** A transport whose server stores each cmid once and can be taken offline. */
class FakeTransport {
  constructor() {
    this.user = "alice";
    this.connected = true;
    this.stored = new Map();
    this.wire = [];
    this.refuse = new Set();
  }
  async sendEntry(entry) {
    if (!this.connected) throw new FlareError(503, "offline", true);
    this.wire.push(entry.cmid);
    if (this.refuse.has(entry.cmid)) throw new FlareError(422, "bad body");
    const duplicate = this.stored.has(entry.cmid);
    if (!duplicate) this.stored.set(entry.cmid, this.stored.size + 1);
    return { id: 1, conv: entry.conv, seq: this.stored.get(entry.cmid), msg_id: "1", ts: 1, duplicate, target: 0, version: 0, body: null };
  }
  async findStored(entry) {
    const seq = this.stored.get(entry.cmid);
    return seq === undefined ? null : { id: 0, conv: entry.conv, seq, msg_id: "1", ts: 1, duplicate: true, target: 0, version: 0, body: null };
  }
}

for (const [name, makeStore] of [
  ["memory", () => new MemoryOutboxStore()],
  ["IndexedDB", () => new IndexedDbOutboxStore(`outbox-test-${Math.random()}`)],
]) {
  describe(`outbox over ${name}`, () => {
    test("entries written offline are sent once, in order, when the connection returns", async () => {
      const t = new FakeTransport();
      t.connected = false;
      const outbox = new Outbox(makeStore(), t, 240_000, 100);
      const events = [];
      outbox.events.on((e) => events.push([e.type, e.entry.cmid]));
      for (const c of ["a", "b", "c"]) await outbox.enqueue("d:alice:bob", { text: c }, "text", c);
      await outbox.flush();
      assert.deepEqual(t.wire, []);
      assert.equal((await outbox.list()).length, 3);
      t.connected = true;
      const settled = outbox.settled("c");
      await outbox.flush();
      await outbox.flush(); // nothing left: nothing sent twice
      assert.deepEqual(t.wire, ["a", "b", "c"]);
      assert.equal((await settled).seq, 3);
      assert.deepEqual(await outbox.list(), []);
      assert.deepEqual(events.filter(([type]) => type === "sent").map(([, c]) => c), ["a", "b", "c"]);
    });

    test("a refused entry stays with its error until retried or discarded; the rest go on", async () => {
      const t = new FakeTransport();
      t.refuse.add("bad");
      const outbox = new Outbox(makeStore(), t, 240_000, 100);
      await assert.rejects(outbox.settled("bad"), TypeError); // no such entry yet
      await outbox.enqueue("d:alice:bob", { text: "x" }, "text", "bad");
      const failed = outbox.settled("bad").then(() => null, (err) => err);
      await outbox.enqueue("d:alice:bob", { text: "y" }, "text", "good");
      await outbox.flush();
      assert.equal((await failed).code, 422);
      const [left] = await outbox.list();
      assert.deepEqual([left.cmid, left.error.code], ["bad", 422]);
      assert.ok(t.stored.has("good"));
      t.refuse.clear();
      await outbox.retry("bad");
      assert.deepEqual(await outbox.list(), []);
    });

    test("an entry first attempted before the idempotency window is looked up, not stored twice", async () => {
      const t = new FakeTransport();
      const store = makeStore();
      t.stored.set("old", 1); // the server stored it, the ack was lost, and the page was closed
      await store.put({ cmid: "old", conv: "d:alice:bob", kind: "text", body: { text: "x" }, createdAt: 1, order: 1, user: "alice", firstAttemptAt: Date.now() - 600_000, error: null });
      const outbox = new Outbox(store, t, 240_000, 100);
      const events = [];
      outbox.events.on((e) => events.push(e));
      await outbox.flush();
      assert.deepEqual(t.wire, []); // found, not sent
      assert.equal(events[0].ack.duplicate, true);
      assert.deepEqual(await store.list(), []);
    });
  });
}
