// End to end against a real `flare serve`: the Python SDK's ordering and retry cases (tests/e2e/
// test_messaging.py), operations applied in a view, receipts, typing, presence, settings, accounts and tokens,
// restore on a new device, and the outbox across a reconnect and a reload.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { IDBFactory } from "fake-indexeddb";
import { ConversationView, ErrorCode, FlareClient, FlareError, IndexedDbOutboxStore, RestClient, directConv } from "../dist/flare.js";
import { Devices, Server, Wire, barrier, until } from "./server.mjs";

let server;
let n = 0;
/** A fresh pair of user ids per test: tests share one server. */
const names = (...base) => {
  n += 1;
  return base.map((b) => `${b}${n}`);
};

before(async () => {
  server = new Server();
  await server.start();
});
after(async () => {
  await server?.destroy();
});

async function withDevices(fn) {
  const devices = new Devices(server);
  try {
    await fn(devices);
  } finally {
    await devices.close();
  }
}

/** A WebSocket that loses the `msg` pushes `lose(frame)` picks, as a flaky network would. */
function lossyWebSocket(lose) {
  return class extends WebSocket {
    set onmessage(fn) {
      super.onmessage = (ev) => {
        if (typeof ev.data === "string") {
          const frame = JSON.parse(ev.data);
          if (frame.type === "msg" && lose(frame)) return;
        }
        fn(ev);
      };
    }
    get onmessage() {
      return super.onmessage;
    }
  };
}

describe("messaging", () => {
  test("two users chat both ways, in order, each message pushed once (JSON and MessagePack)", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const wires = { [alice]: new Wire(), [bob]: new Wire() };
      const a = await d.device(alice, "d1", { onFrame: wires[alice].onFrame });
      const b = await d.device(bob, "d1", { encoding: "msgpack", onFrame: wires[bob].onFrame });
      const sentA = [];
      const sentB = [];
      for (let i = 0; i < 5; i++) {
        sentA.push(await a.send(conv, `a${i}`));
        sentB.push(await b.send(conv, `b${i}`));
      }
      const gotB = [];
      const gotA = [];
      for (let i = 0; i < 5; i++) gotB.push(await b.nextMessage());
      for (let i = 0; i < 5; i++) gotA.push(await a.nextMessage());
      assert.deepEqual(gotB.map((m) => [m.seq, m.sender, m.body.text, m.msg_id]), sentA.map((k, i) => [k.seq, alice, `a${i}`, k.msg_id]));
      assert.deepEqual(gotA.map((m) => [m.seq, m.body.text]), sentB.map((k, i) => [k.seq, `b${i}`]));
      assert.deepEqual([...sentA, ...sentB].map((k) => k.seq).sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      // On the wire: each message pushed once, and never to the device that sent it.
      const last = await barrier(d, conv, alice, ...Object.values(wires));
      assert.deepEqual(wires[bob].seqs(conv), [...sentA.map((k) => k.seq), last]);
      assert.deepEqual(wires[alice].seqs(conv), [...sentB.map((k) => k.seq), last]);
      assert.equal((await b.nextMessage()).seq, last);
      assert.equal(b.pendingMessages(), 0);
    }));

  test("a lost push is a gap: it is pulled, and the stream stays in order without duplicates", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const wire = new Wire();
      const a = await d.device(alice);
      const b = await d.device(bob, "d1", { WebSocket: lossyWebSocket((f) => f.seq === 2 || f.seq === 3), onFrame: wire.onFrame });
      for (let i = 1; i <= 5; i++) await a.send(conv, `m${i}`);
      const got = [];
      for (let i = 0; i < 5; i++) got.push(await b.nextMessage());
      assert.deepEqual(got.map((m) => [m.seq, m.body.text]), [1, 2, 3, 4, 5].map((s) => [s, `m${s}`]));
      assert.ok(wire.frames.some((f) => f.type === "messages"), "the gap was pulled");
      assert.equal(b.localMaxSeq(conv), 5);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(b.pendingMessages(), 0);
    }));

  test("a retried send with the same cmid returns the original ack, and nothing is stored or pushed twice", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const tabletWire = new Wire();
      const bobWire = new Wire();
      await d.device(alice, "tablet", { onFrame: tabletWire.onFrame });
      const a = await d.device(alice);
      const b = await d.device(bob, "d1", { onFrame: bobWire.onFrame });
      const first = await a.send(conv, "once", { cmid: "client-42" });
      const again = await a.send(conv, "once", { cmid: "client-42" });
      assert.equal(first.duplicate, false);
      assert.deepEqual([again.seq, again.msg_id, again.duplicate], [first.seq, first.msg_id, true]);
      const http = await d.rest(alice).sendMessage(conv, "client-42", { text: "once" });
      assert.deepEqual([http.seq, http.duplicate], [first.seq, true]);
      assert.deepEqual((await b.history(conv)).map((m) => m.seq), [first.seq]);
      const last = await barrier(d, conv, bob, tabletWire, bobWire);
      assert.deepEqual(bobWire.seqs(conv), [first.seq, last]);
      assert.deepEqual(tabletWire.seqs(conv), [first.seq, last]);
    }));

  test("a send cut by a dropped connection is retried on the reconnect with the same cmid and stored once", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const a = await d.device(alice, "d1", { initialBackoffMs: 20 });
      const b = await d.device(bob);
      const sending = a.send(conv, "through the drop", { cmid: "drop-1" });
      a.dropConnection(); // the send's frame may or may not have reached the server
      const ack = await sending;
      assert.equal(a.reconnects, 1);
      const got = await b.nextMessage();
      assert.deepEqual([got.seq, got.cmid], [ack.seq, "drop-1"]);
      assert.deepEqual((await b.history(conv)).map((m) => m.cmid), ["drop-1"]);
    }));

  test("after a reconnect, catch-up yields each missed message once, and none is pushed again", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const wire = new Wire();
      const a = await d.device(alice);
      const b = await d.device(bob, "d1", { onFrame: wire.onFrame });
      const first = await a.send(conv, "m0");
      await b.nextMessage();
      b.reconnect = false;
      b.dropConnection();
      for (let i = 1; i <= 5; i++) await a.send(conv, `m${i}`);
      await b.connect();
      const changed = await b.catchUp();
      assert.deepEqual(changed.map((c) => c.conv), [conv]);
      const got = [];
      for (let i = 0; i < 5; i++) got.push(await b.nextMessage());
      assert.deepEqual(got.map((m) => m.body.text), ["m1", "m2", "m3", "m4", "m5"]);
      const last = await barrier(d, conv, alice, wire);
      assert.deepEqual(wire.seqs(conv), [first.seq, last]);
      assert.equal((await b.nextMessage()).seq, last);
    }));

  test("a group: every member's device gets each message once; a non-member is refused", () =>
    withDevices(async (d) => {
      const users = names("u", "v", "w");
      for (const u of users) await d.user(u);
      const group = await d.rest(users[0]).createGroup("three", users.slice(1));
      const conv = group.conv;
      const clients = [];
      for (const u of users) clients.push(await d.device(u, "d1", { echoOwn: true }));
      for (const c of clients) {
        await c.catchUp();
        assert.equal((await c.nextMessage()).body.event, "group_created");
      }
      const ack = await clients[1].send(conv, "hello group");
      for (const c of clients) {
        const m = await c.nextMessage();
        assert.deepEqual([m.seq, m.sender, m.body.text], [ack.seq, users[1], "hello group"]); // the sender's own too (echoOwn)
      }
      const [outsider] = names("outsider");
      await d.user(outsider);
      const o = await d.device(outsider);
      await assert.rejects(o.send(conv, "let me in", { attempts: 1 }), (err) => err instanceof FlareError && err.code === ErrorCode.FORBIDDEN);
      await assert.rejects(o.pull(conv), (err) => err.code === 403);
    }));
});

describe("operations", () => {
  test("edit, react, reply, forward, recall, delete and delete-for-me apply in the views as on the server", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const group = await d.rest(alice).createGroup("fwd", [bob]);
      const a = await d.device(alice, "d1", { echoOwn: true });
      const b = await d.device(bob, "d1", { echoOwn: true });
      const views = new Map([[a, new ConversationView()], [b, new ConversationView()]]);
      for (const [client, view] of views) {
        client.on("message", (m) => view.apply(m));
        client.on("hidden", (h) => view.applyHidden(h));
      }
      const q = await a.send(conv, "lunch at 12?");
      const answer = await b.reply(conv, q.seq, "yes!");
      const edited = await a.edit(conv, q.seq, "lunch at 12:30?", 1);
      assert.deepEqual([edited.target, edited.version], [q.seq, 2]);
      await assert.rejects(a.edit(conv, q.seq, "stale", 1), (err) => err.code === ErrorCode.CONFLICT && err.detail.version === 2);
      await b.react(conv, q.seq, "👍");
      await a.react(conv, q.seq, "🎉");
      await b.react(conv, q.seq, "👍", { remove: true });
      const fw = await b.forward(conv, [q.seq, answer.seq], group.conv, { title: "lunch" });
      assert.equal(fw.conv, group.conv);
      const oops = await a.send(conv, "oops");
      await a.delete(conv, oops.seq);
      const hidden = await b.deleteForMe(conv, answer.seq);
      assert.deepEqual(hidden.seqs, [answer.seq]);
      const recalled = await a.recall(conv, q.seq);
      assert.equal(recalled.version, 3);
      await assert.rejects(a.react(conv, q.seq, "x"), (err) => err.code === ErrorCode.GONE);

      const fields = (m) => [m.seq, m.kind, m.state, m.body, m.reactions, m.version, m.edited_at];
      for (const [client, view] of views) {
        const server = await client.history(conv);
        await until(() => view.history(conv).length === server.length, 10_000, "the view to hold every message");
        assert.deepEqual(view.history(conv).map(fields), server.map(fields));
      }
      const bv = views.get(b);
      assert.equal(bv.get(conv, q.seq).state, "recalled");
      assert.equal(bv.get(conv, answer.seq).state, "hidden");
      assert.equal(views.get(a).get(conv, answer.seq).body.reply_to.state, "recalled"); // the quote lost its snippet
      const merged = (await a.pull(group.conv)).items.at(-1);
      assert.deepEqual([merged.kind, merged.body.title, merged.body.items.length], ["merged", "lunch", 2]);
    }));
});

describe("receipts, typing, presence, settings", () => {
  test("receipts and typing reach the peer and the user's other devices; readers and settings", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const a = await d.device(alice);
      const phone = await d.device(bob, "phone");
      const laptop = await d.device(bob, "laptop");
      const sent = await a.send(conv, "did you get this?");
      await phone.delivered(conv, sent.seq);
      const delivered = await a.nextReceipt();
      assert.deepEqual([delivered.user, delivered.kind, delivered.seq, delivered.device], [bob, "delivered", sent.seq, "phone"]);
      await phone.read(conv, sent.seq);
      for (const c of [a, laptop]) {
        const r = await c.nextReceipt();
        assert.deepEqual([r.conv, r.user, r.kind, r.seq], [conv, bob, "read", sent.seq]);
      }
      await assert.rejects(phone.read(conv, 99), (err) => err.code === ErrorCode.OUT_OF_RANGE);
      const readers = await a.readers(conv, sent.seq);
      assert.deepEqual([readers.read, readers.unread], [[bob], []]);

      await phone.typing(conv);
      const notice = await a.nextTyping();
      assert.deepEqual([notice.conv, notice.user, notice.device], [conv, bob, "phone"]);

      const s = await phone.updateSettings(conv, { pinned: true, draft: "see you at" });
      assert.deepEqual([s.pinned, s.muted, s.draft, s.id !== null], [true, false, "see you at", true]);
      const pushed = await laptop.nextSettings();
      assert.deepEqual([pushed.conv, pushed.pinned, pushed.draft, pushed.id], [conv, true, "see you at", null]);
      const cleared = await phone.updateSettings(conv, { clearTo: sent.seq });
      assert.equal(cleared.cleared_seq, sent.seq);
      const [summary] = await laptop.sync(0);
      assert.deepEqual([summary.pinned, summary.draft, summary.cleared_seq], [true, "see you at", sent.seq]);
    }));

  test("presence: watched users' states, and a change when one comes online", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const a = await d.device(alice);
      const states = await a.watchPresence([bob]);
      assert.deepEqual(states.map((s) => [s.user, s.online]), [[bob, false]]);
      await d.device(bob);
      const change = await a.nextPresence();
      assert.deepEqual([change.user, change.online], [bob, true]);
    }));
});

describe("accounts and devices", () => {
  test("register, discover the gateway, connect with refreshing tokens, refresh, push target, logout", async () => {
    const [carol] = names("carol");
    const saved = [];
    const rest = new RestClient(server.apiUrl, { onTokens: (t) => saved.push(t) });
    const tokens = await rest.register(carol, "carol-password", { displayName: "Carol" });
    assert.equal(tokens.user_id, carol);
    await assert.rejects(new RestClient(server.apiUrl).register(carol, "carol-password"), (err) => err.code === ErrorCode.CONFLICT);
    const client = await FlareClient.fromRest(rest, "carol-web", { outbox: false });
    assert.equal(client.url, server.wsUrl);
    try {
      const ok = await client.connect();
      assert.deepEqual([ok.user, ok.device], [carol, "carol-web"]);
      assert.ok((await client.ping()) > 0);
      const before = rest.tokens;
      await rest.refresh();
      assert.notEqual(rest.tokens.refreshToken, before.refreshToken);
      assert.equal(saved.at(-1).accessToken, rest.token);
      // A client restored from saved tokens refreshes an expiring access token by itself.
      const restored = new RestClient(server.apiUrl, { tokens: { ...saved.at(-1), expiresAt: Date.now() + 1000 } });
      assert.equal((await restored.me()).user_id, carol);
      assert.notEqual(restored.token, rest.token);
      const target = await restored.registerPush("carol-web", "webpush", "https://push.example.com/sub/1", { keys: { p256dh: "BNcR", auth: "tBHI" } });
      assert.deepEqual([target.device, target.provider], ["carol-web", "webpush"]);
      assert.deepEqual((await restored.devices()).map((t) => t.device), ["carol-web"]);
      await restored.unregisterPush("carol-web");
      await restored.logout();
      assert.equal(restored.token, null);
      await assert.rejects(new RestClient(server.apiUrl, { token: saved.at(-1).accessToken }).me(), (err) => err.code === 401);
    } finally {
      await client.close();
    }
    await assert.rejects(new RestClient(server.apiUrl).login(carol, "wrong-password"), (err) => err.code === 401);
  });

  test("restore on a new device: the latest conversations with their newest messages", () =>
    withDevices(async (d) => {
      const [alice, bob, carol] = names("alice", "bob", "carol");
      for (const u of [alice, bob, carol]) await d.user(u);
      const a = await d.device(alice);
      await a.send(directConv(alice, bob), "to bob 1");
      await a.send(directConv(alice, bob), "to bob 2");
      await a.send(directConv(alice, carol), "to carol");
      const laptop = await d.device(alice, "laptop");
      const list = await laptop.restore({ first: 1, recent: 5 });
      assert.deepEqual(list.map((c) => c.conv), [directConv(alice, carol), directConv(alice, bob)]);
      assert.deepEqual(list[0].recent.map((m) => m.body.text), ["to carol"]);
      assert.equal(laptop.pendingMessages(), 0); // restore does not feed the stream
    }));
});

describe("outbox", () => {
  test("messages written offline are sent once when the connection returns, and after a reload", () =>
    withDevices(async (d) => {
      const [alice, bob] = names("alice", "bob");
      await d.user(alice);
      await d.user(bob);
      const conv = directConv(alice, bob);
      const bobWire = new Wire();
      const b = await d.device(bob, "d1", { onFrame: bobWire.onFrame });
      const indexedDB = new IDBFactory(); // one browser profile: its IndexedDB outlives a page
      const dbName = `flare-outbox:${alice}`;
      let online = true;
      const gate = class extends WebSocket {
        constructor(url, protocols) {
          super(online ? url : "ws://127.0.0.1:9/v1/ws", protocols);
        }
      };

      // The first page: connected, then offline; two messages are written while offline.
      const page1 = await d.device(alice, "web", { WebSocket: gate, outbox: new IndexedDbOutboxStore(dbName, indexedDB), initialBackoffMs: 20, maxBackoffMs: 100 });
      online = false;
      page1.dropConnection();
      const e1 = await page1.enqueue(conv, "written offline 1");
      await page1.enqueue(conv, "written offline 2");
      assert.deepEqual((await page1.outbox.list()).map((e) => e.cmid).length, 2);
      // The connection returns: both are sent once, in order.
      const sent = page1.outbox.settled(e1.cmid);
      online = true;
      assert.equal((await sent).duplicate, false);
      await until(async () => (await page1.outbox.list()).length === 0, 10_000, "the outbox to empty");

      // Offline again; a third message is written, and the page is reloaded before it could go.
      online = false;
      page1.dropConnection();
      const e3 = await page1.enqueue(conv, "written before the reload");
      // A fourth was on the wire when the page closed: stored by the server, its ack lost.
      const e4 = await page1.enqueue(conv, "in flight at the reload");
      await page1.close();
      await d.rest(alice).sendMessage(conv, e4.cmid, { text: "in flight at the reload" });
      online = true;
      const page2 = await d.device(alice, "web", { WebSocket: gate, outbox: new IndexedDbOutboxStore(dbName, indexedDB), connect: false });
      const events = [];
      page2.on("outbox", (e) => events.push(e));
      await page2.connect();
      await until(async () => events.filter((e) => e.type === "sent").length === 2, 10_000, "the reloaded outbox to send");
      assert.deepEqual(events.map((e) => [e.entry.cmid, e.ack.duplicate]), [[e3.cmid, false], [e4.cmid, true]]);

      const texts = (await b.history(conv)).map((m) => m.body.text);
      assert.deepEqual(texts, ["written offline 1", "written offline 2", "in flight at the reload", "written before the reload"]);
      const last = await barrier(d, conv, bob, bobWire);
      assert.equal(new Set(bobWire.seqs(conv)).size, bobWire.seqs(conv).length); // nothing pushed twice
      assert.equal(bobWire.seqs(conv).length, 5);
      assert.equal(last, 5);
    }));
});
