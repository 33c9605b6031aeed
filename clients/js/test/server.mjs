// A real `flare serve` for the tests: free loopback ports, a temporary data directory, ready when it prints
// `flare ready`; users are created and given tokens through the admin API, as a business backend would.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { FlareClient, RestClient } from "../dist/flare.js";

const ROOT = new URL("../../../", import.meta.url).pathname;
// FLARE_PYTHON (the pytest that runs this suite sets it): `python -m flare_im.cli`; else the repository's venv.
const FLARE = process.env.FLARE_PYTHON ? [process.env.FLARE_PYTHON, "-m", "flare_im.cli"] : [join(ROOT, ".venv", "bin", "flare")];

const BAD_LOG_LINE = /Traceback \(most recent call last\)|"level": ?"(ERROR|CRITICAL)"|^(ERROR|CRITICAL):/;

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export class Server {
  constructor() {
    this.dataDir = mkdtempSync(join(tmpdir(), "flare-js-"));
    this.proc = null;
    this.log = "";
  }

  get apiUrl() {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.wsPort}/v1/ws`;
  }

  get adminKey() {
    return readFileSync(join(this.dataDir, "admin.key"), "utf8").trim();
  }

  /** Starts the server (again on the same ports and data after a stop) and waits for `flare ready`. */
  async start() {
    this.apiPort ??= await freePort();
    this.wsPort ??= await freePort();
    const args = ["serve", "--host", "127.0.0.1", "--api-port", String(this.apiPort), "--ws-port", String(this.wsPort), "--data-dir", this.dataDir];
    const proc = spawn(FLARE[0], [...FLARE.slice(1), ...args], { env: { ...process.env, FLARE_LOG_LEVEL: "WARNING" }, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stderr.on("data", (chunk) => {
      this.log += chunk;
    });
    const lines = createInterface({ input: proc.stdout });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`flare serve did not start within 30 s:\n${this.log}`)), 30_000);
      proc.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`flare serve exited ${code}:\n${this.log}`));
      });
      lines.on("line", (line) => {
        if (line.startsWith("flare ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    this.admin = new RestClient(this.apiUrl, { adminKey: this.adminKey });
  }

  /** SIGTERM, and waits for the exit (a graceful stop: connections get kick 4100). */
  async stop() {
    const proc = this.proc;
    if (proc === null) return;
    this.proc = null;
    if (proc.exitCode !== null) return;
    await new Promise((resolve) => {
      proc.removeAllListeners("exit");
      proc.on("exit", resolve);
      proc.kill("SIGTERM");
    });
  }

  /** Stops the server and fails if it logged a traceback or an ERROR line (as tests/e2e/conftest.py does). */
  async destroy() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
    const bad = this.log.split("\n").filter((line) => BAD_LOG_LINE.test(line));
    if (bad.length) throw new Error(`the server logged ${bad.length} error lines, e.g.:\n${bad.slice(0, 3).join("\n")}`);
  }

  /** Creates user `uid` and returns an access token for it. */
  async user(uid) {
    await this.admin.adminCreateUser(uid, { displayName: uid });
    return this.admin.adminIssueToken(uid);
  }
}

/** Connected clients of a test, closed together at its end. */
export class Devices {
  constructor(server) {
    this.server = server;
    this.tokens = new Map();
    this.clients = [];
  }

  async user(uid) {
    this.tokens.set(uid, await this.server.user(uid));
    return uid;
  }

  rest(uid) {
    return new RestClient(this.server.apiUrl, { token: this.tokens.get(uid) });
  }

  /** A client of `uid` as `device` (connected unless `connect: false`); options go to FlareClient. */
  async device(uid, device = "d1", { connect = true, ...options } = {}) {
    const client = new FlareClient(this.server.wsUrl, this.tokens.get(uid), device, { outbox: false, ...options });
    this.clients.push(client);
    if (connect) await client.connect();
    return client;
  }

  async close() {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}

/** Records the `msg` pushes a client receives, as they arrive on the wire (before any dedupe). */
export class Wire {
  constructor() {
    this.frames = [];
    this.onFrame = (frame) => this.frames.push(frame);
  }

  seqs(conv) {
    return this.frames.filter((f) => f.type === "msg" && f.conv === conv).map((f) => f.seq);
  }
}

/**
 * A message sent over REST reaches every online device of both users after anything pushed before it; waiting
 * for it on each wire means nothing else is still on its way. Returns its seq.
 */
export async function barrier(devices, conv, uid, ...wires) {
  const rest = devices.rest(uid);
  const sent = await rest.sendMessage(conv, `barrier-${Math.random().toString(16).slice(2)}`, { text: "barrier" });
  const deadline = Date.now() + 10_000;
  while (!wires.every((w) => w.seqs(conv).includes(sent.seq))) {
    if (Date.now() > deadline) throw new Error(`barrier seq ${sent.seq} did not reach every wire`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return sent.seq;
}

/** Waits until `check()` is true (polling), or fails after `ms`. */
export async function until(check, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
