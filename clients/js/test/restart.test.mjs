// A server restart: connected clients are kicked (4100), reconnect with backoff once it is back, and catch up
// by sync + pull; a message written while the server was down goes out of the outbox once.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { MemoryOutboxStore, directConv } from "../dist/flare.js";
import { Devices, Server, Wire, barrier, until } from "./server.mjs";

let server;
before(async () => {
  server = new Server();
  await server.start();
});
after(async () => {
  await server?.destroy();
});

test("after the server restarts, clients reconnect, catch up in order, and the outbox sends once", async () => {
  const d = new Devices(server);
  try {
    await d.user("alice");
    await d.user("bob");
    const conv = directConv("alice", "bob");
    // While `online` is false, connections go to a closed port: the clients stay away until the test is ready.
    let online = true;
    const gate = class extends WebSocket {
      constructor(url, protocols) {
        super(online ? url : "ws://127.0.0.1:9/v1/ws", protocols);
      }
    };
    const options = { WebSocket: gate, initialBackoffMs: 20, maxBackoffMs: 200 };
    const wire = new Wire();
    const a = await d.device("alice", "d1", { ...options, outbox: new MemoryOutboxStore() });
    const b = await d.device("bob", "d1", { ...options, onFrame: wire.onFrame });
    const first = await a.send(conv, "m0");
    assert.equal((await b.nextMessage()).seq, first.seq);

    online = false;
    await server.stop();
    await until(() => !a.connected && !b.connected, 10_000, "both clients to see the restart");
    assert.equal(b.lastCloseCode, 4100); // after kick 4100 (the server's exit may be seen before the frames)
    const queued = await a.enqueue(conv, "written while the server was down");
    await server.start();
    for (let i = 1; i <= 5; i++) await d.rest("alice").sendMessage(conv, `rest-${i}`, { text: `m${i}` });
    online = true;
    await Promise.all([a.waitConnected(15_000), b.waitConnected(15_000)]);

    const sent = await a.outbox.settled(queued.cmid);
    const got = [];
    for (let i = 0; i < 6; i++) got.push(await b.nextMessage());
    assert.deepEqual(got.map((m) => m.seq), [2, 3, 4, 5, 6, 7]);
    assert.deepEqual(got.slice(0, 5).map((m) => m.body.text), ["m1", "m2", "m3", "m4", "m5"]);
    assert.equal(got[5].body.text, "written while the server was down");
    assert.equal(sent.seq, 7);
    assert.ok(b.reconnects >= 1 && a.reconnects >= 1);
    assert.deepEqual(await a.outbox.list(), []);
    // Nothing stored twice, and what bob missed came from the pull, not from pushes.
    assert.deepEqual((await b.history(conv)).map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
    const last = await barrier(d, conv, "alice", wire);
    const pushed = wire.seqs(conv);
    assert.equal(new Set(pushed).size, pushed.length);
    assert.ok(pushed.every((s) => s === 1 || s >= 7), `pushed ${pushed}`);
    assert.equal((await b.nextMessage()).seq, last);
  } finally {
    await d.close();
  }
});
