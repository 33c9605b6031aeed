/**
 * The signed-in state of the app: one RestClient and one FlareClient (this tab is one device), the conversation
 * list, a ConversationView of the messages held, and the ephemeral state (typing, presence, peers' receipts).
 * Components read it and call its methods; every change calls `changed()`, which re-renders on the next frame.
 */
import {
  type ConvSummary,
  ConversationView,
  ErrorCode,
  FlareClient,
  FlareError,
  IndexedDbOutboxStore,
  type Message,
  type OutboxEntry,
  type PresenceState,
  type Receipt,
  RestClient,
  type TokenState,
} from "../../js/src/index.js";
import { t } from "./i18n.js";

/** Operation events: kept in the view at their own seqs, never shown as messages. */
export const EVENT_KINDS = new Set(["edit", "recall", "delete", "react", "unreact"]);
const TOKENS_KEY = "flare-tokens";
const TYPING_SHOW_MS = 5_000;
const PAGE = 30;

export function savedTokens(): TokenState | null {
  try {
    const t = JSON.parse(localStorage.getItem(TOKENS_KEY) ?? "null") as TokenState | null;
    return t && typeof t.accessToken === "string" ? t : null;
  } catch {
    return null;
  }
}

function saveTokens(t: TokenState | null): void {
  if (t) localStorage.setItem(TOKENS_KEY, JSON.stringify(t));
  else localStorage.removeItem(TOKENS_KEY);
}

/**
 * `fetch` for the RestClient, making the tabs of this browser share one token pair. A refresh token is
 * single-use and presenting it twice revokes the session, so refreshes are serialised across tabs (a Web Lock)
 * and a tab whose refresh token another tab has already traded gets that tab's new pair instead of asking.
 */
async function sharedTokenFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (!url.endsWith("/v1/auth/refresh") || typeof init?.body !== "string" || !navigator.locks) return fetch(input, init);
  const sent = (JSON.parse(init.body) as { refresh_token?: string }).refresh_token;
  return navigator.locks.request("flare-token-refresh", async () => {
    const saved = savedTokens();
    if (saved?.refreshToken && saved.refreshToken !== sent && saved.expiresAt > Date.now() + 60_000) {
      const expiresIn = Math.floor((saved.expiresAt - Date.now()) / 1000);
      const body = { user_id: saved.userId, access_token: saved.accessToken, refresh_token: saved.refreshToken, token_type: "Bearer", expires_in: expiresIn };
      return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
    }
    const resp = await fetch(input, init);
    if (resp.ok) {
      const t = (await resp.clone().json()) as { user_id: string; access_token: string; refresh_token: string; expires_in: number };
      saveTokens({ accessToken: t.access_token, refreshToken: t.refresh_token, expiresAt: Date.now() + t.expires_in * 1000, userId: t.user_id });
    }
    return resp;
  });
}

/** A RestClient whose tokens are kept in localStorage (shared by the tabs of this browser). */
export function makeRest(): RestClient {
  const tokens = savedTokens();
  // The API is at the root the app is served under (/app/ → /), so a reverse proxy may mount both under a prefix.
  return new RestClient(new URL("../", location.href).href, { ...(tokens ? { tokens } : {}), onTokens: saveTokens, fetch: sharedTokenFetch });
}

/** This tab's device id: kept for the tab's life (a reload keeps it), a new one for each new tab. */
function deviceId(): string {
  let id = sessionStorage.getItem("flare-device");
  if (!id) {
    id = `web-${crypto.randomUUID().slice(0, 12)}`;
    sessionStorage.setItem("flare-device", id);
  }
  return id;
}

/** The gateway URL as the browser can reach it: a server bound to every address lists 0.0.0.0 or [::]. */
export function reachable(url: string): string {
  const u = new URL(url);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]" || u.hostname === "") u.hostname = location.hostname;
  if (location.protocol === "https:" && u.protocol === "ws:") u.protocol = "wss:";
  return u.toString();
}

export interface HistoryState {
  oldest: number; // the lowest seq held (0: nothing loaded yet)
  more: boolean; // older messages exist
  loading: boolean;
  loaded: boolean; // the newest page has been pulled
}

export type Status = "connecting" | "online" | "offline";

/** The image types the server's `image` kind accepts; anything else is sent as a file. */
const IMAGE_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"]);

/** Signed URLs of a media (GET /v1/media/{id}), valid until `expires` (epoch s). */
export interface MediaUrls {
  url: string;
  thumb: string | null;
  expires: number;
}

export interface Upload {
  id: string;
  conv: string;
  name: string;
}

export class Session {
  readonly rest: RestClient;
  readonly me: string;
  readonly device = deviceId();
  client: FlareClient | null = null;
  readonly convs = new Map<string, ConvSummary>();
  readonly view = new ConversationView();
  readonly histories = new Map<string, HistoryState>();
  readonly typing = new Map<string, Map<string, number>>();
  readonly presence = new Map<string, PresenceState>();
  /** Direct conversations: the peer's read and delivered positions, as far as this tab knows. */
  readonly peerRead = new Map<string, number>();
  readonly peerDelivered = new Map<string, number>();
  readonly names = new Map<string, string>();
  pending: OutboxEntry[] = [];
  uploads: Upload[] = [];
  /** media id → signed URLs, or "failed" (gone, blocked, not allowed). */
  readonly media = new Map<string, MediaUrls | "failed">();
  private readonly mediaLoading = new Set<string>();
  private uploading: Promise<void> = Promise.resolve();
  status: Status = "connecting";
  active: string | null = null;
  /** A message to scroll to and mark once it is shown (a search result). */
  focus: { conv: string; seq: number } | null = null;
  error = "";
  private readonly listeners = new Set<() => void>();
  private scheduled = false;
  private syncing: Promise<void> | null = null;
  private syncAgain = false;
  /** Groups this user was removed from (or left), by the seq of the notice. */
  private readonly removedAt = new Map<string, number>();
  private readonly stops: Array<() => void> = [];
  private readonly unnamed = new Set<string>();
  private naming: ReturnType<typeof setTimeout> | null = null;

  constructor(rest: RestClient, me: string) {
    this.rest = rest;
    this.me = me;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const l of this.listeners) l();
    });
  }

  // ------------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    const [url] = await this.rest.gateways();
    if (url === undefined) throw new Error("the server lists no WebSocket gateway");
    const client = new FlareClient(reachable(url), this.rest.tokenProvider(), this.device, {
      echoOwn: true,
      outbox: new IndexedDbOutboxStore(`flare-outbox:${this.me}:${this.device}`),
    });
    this.client = client;
    this.stops.push(
      client.on("message", (m) => this.onMessage(m)),
      client.on("hidden", (h) => {
        this.view.applyHidden(h);
        this.changed();
      }),
      client.on("receipt", (r) => this.onReceipt(r)),
      client.on("typing", (n) => {
        if (n.user === this.me) return;
        let users = this.typing.get(n.conv);
        if (!users) this.typing.set(n.conv, (users = new Map()));
        users.set(n.user, Date.now() + TYPING_SHOW_MS);
        this.changed();
        setTimeout(() => this.changed(), TYPING_SHOW_MS + 50);
      }),
      client.on("presence", (p) => {
        this.presence.set(p.user, p);
        this.changed();
      }),
      client.on("settings", (s) => {
        const c = this.convs.get(s.conv);
        if (c) {
          Object.assign(c, { pinned: s.pinned, muted: s.muted, hidden: s.hidden, draft: s.draft, cleared_seq: s.cleared_seq });
          this.changed();
        }
      }),
      client.on("outbox", (e) => {
        if (e.type === "sent") this.pending = this.pending.filter((p) => p.cmid !== e.entry.cmid);
        else if (e.type === "queued") this.pending = [...this.pending.filter((p) => p.cmid !== e.entry.cmid), e.entry];
        else this.pending = this.pending.map((p) => (p.cmid === e.entry.cmid ? { ...e.entry, error: e.error } : p));
        this.changed();
      }),
      client.on("connected", () => {
        this.status = "online";
        this.changed();
        void this.watchPeers();
      }),
      client.on("disconnected", () => {
        this.status = "offline";
        this.changed();
      }),
    );
    // A browser that knows it is offline: drop the socket at once rather than wait for the liveness ping.
    const offline = (): void => client.dropConnection();
    window.addEventListener("offline", offline);
    this.stops.push(() => window.removeEventListener("offline", offline));
    await client.connect();
    this.status = "online";
    const list = await client.sync();
    for (const c of list) this.putSummary(c);
    this.pending = (await client.outbox?.list()) ?? [];
    this.changed();
    void this.watchPeers();
    void this.loadNames([this.me, ...[...this.convs.values()].map((c) => c.peer).filter(Boolean)]);
  }

  async stop(): Promise<void> {
    for (const stop of this.stops.splice(0)) stop();
    await this.client?.close();
  }

  async logout(): Promise<void> {
    await this.stop();
    try {
      await this.rest.logout();
    } catch {
      // the tokens are forgotten either way
    }
  }

  // ------------------------------------------------------------------ incoming

  private putSummary(c: ConvSummary): void {
    const known = this.convs.get(c.conv);
    // The server pushes a removal notice before it records the removal: a sync right after it can still say
    // "member". A summary that joined before the notice is that stale one (a re-add has a later join seq).
    if ((this.removedAt.get(c.conv) ?? 0) > c.join_seq) c.left = true;
    this.convs.set(c.conv, c);
    // The stream starts after what the summary says exists; older messages are pulled as the user scrolls.
    if (!known) this.client?.startAfter(c.conv, c.max_seq);
    if (c.last) this.take(c.last);
  }

  /** Applies a message to the view and asks, in one batch, for the names of the users it mentions. */
  private take(m: Message): void {
    this.view.apply(m);
    const b = m.body;
    const quoted = b["reply_to"] as { sender?: unknown } | undefined;
    const forwarded = b["forwarded"] as { sender?: unknown } | undefined;
    for (const u of [m.sender, b["actor"], quoted?.sender, forwarded?.sender, ...(Array.isArray(b["users"]) ? b["users"] : [])]) {
      if (typeof u === "string" && u && !this.names.has(u)) this.unnamed.add(u);
    }
    if (this.unnamed.size && this.naming === null) {
      this.naming = setTimeout(() => {
        this.naming = null;
        const ids = [...this.unnamed];
        this.unnamed.clear();
        void this.loadNames(ids);
      }, 30);
    }
  }

  private onMessage(m: Message): void {
    this.take(m);
    if (!EVENT_KINDS.has(m.kind)) this.typing.get(m.conv)?.delete(m.sender); // the message ends its typing
    const c = this.convs.get(m.conv);
    if (!c) {
      void this.resync(); // a new conversation (a first direct message, a group we were added to)
      return;
    }
    if (m.seq > c.max_seq) {
      c.max_seq = m.seq;
      c.last = m;
      if (m.sender === this.me) c.read_seq = Math.max(c.read_seq, m.seq);
      const mine = m.sender === this.me;
      if (!mine && !EVENT_KINDS.has(m.kind)) {
        if (Array.isArray(m.body["mentions"]) && (m.body["mentions"] as unknown[]).includes(this.me)) c.unread_mentions += 1;
      }
      c.unread = Math.max(0, c.max_seq - c.read_seq);
    }
    // A group notice changes what the list shows (name, members, role, membership): fetch the new summary.
    // One that removes this user is applied at once, whether or not the sync already sees it.
    if (m.kind === "system") {
      const event = m.body["event"];
      const users = Array.isArray(m.body["users"]) ? (m.body["users"] as unknown[]) : [];
      if ((event === "member_removed" || event === "member_left") && users.includes(this.me)) {
        this.removedAt.set(m.conv, m.seq);
        c.left = true;
      }
      void this.resync();
    }
    const h = this.histories.get(m.conv);
    if (h && h.oldest === 0) h.oldest = m.seq;
    if (m.sender !== this.me && c.kind === "direct") void this.client?.delivered(m.conv, m.seq).catch(() => undefined);
    if (m.conv === this.active) this.markRead();
    this.changed();
  }

  private onReceipt(r: Receipt): void {
    const c = this.convs.get(r.conv);
    if (r.user === this.me) {
      // Another tab or device of this user read up to r.seq.
      if (c && r.kind === "read" && r.seq > c.read_seq) {
        c.read_seq = r.seq;
        c.unread = Math.max(0, c.max_seq - c.read_seq);
        if (c.read_seq >= c.max_seq) c.unread_mentions = 0;
      }
    } else {
      const map = r.kind === "read" ? this.peerRead : this.peerDelivered;
      map.set(r.conv, Math.max(map.get(r.conv) ?? 0, r.seq));
      if (r.kind === "read") this.peerDelivered.set(r.conv, Math.max(this.peerDelivered.get(r.conv) ?? 0, r.seq));
    }
    this.changed();
  }

  /** Fetches what changed in the list since the last sync (new conversations, renamed groups, roles). */
  resync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true; // what changed after the running sync started is fetched by one more
      return this.syncing;
    }
    const run = (async () => {
      try {
        do {
          this.syncAgain = false;
          const changed = (await this.client?.sync()) ?? [];
          for (const c of changed) this.putSummary(c);
          void this.loadNames(changed.map((c) => c.peer).filter(Boolean));
          if (changed.some((c) => c.kind === "direct")) void this.watchPeers();
          this.changed();
        } while (this.syncAgain);
      } finally {
        this.syncing = null;
      }
    })();
    this.syncing = run;
    return run;
  }

  private async watchPeers(): Promise<void> {
    const peers = [...this.convs.values()].filter((c) => c.kind === "direct" && c.peer).map((c) => c.peer);
    try {
      for (const p of (await this.client?.watchPresence(peers.slice(0, 500))) ?? []) this.presence.set(p.user, p);
      this.changed();
    } catch {
      // presence is a nicety: the next (re)connect watches again
    }
  }

  async loadNames(ids: string[]): Promise<void> {
    const missing = [...new Set(ids)].filter((id) => id && !this.names.has(id));
    if (!missing.length) return;
    try {
      for (const p of await this.rest.users(missing.slice(0, 500))) this.names.set(p["user_id"], p["display_name"] || p["user_id"]);
      this.changed();
    } catch {
      // ids stand in for names
    }
  }

  name(user: string): string {
    return user === this.me ? (this.names.get(user) ?? user) : (this.names.get(user) ?? user);
  }

  title(c: ConvSummary): string {
    if (c.kind === "direct") return this.name(c.peer);
    return c.name || c.conv;
  }

  typingIn(conv: string): string[] {
    const users = this.typing.get(conv);
    if (!users) return [];
    const now = Date.now();
    return [...users].filter(([, until]) => until > now).map(([u]) => u);
  }

  /** Conversations in list order: pinned first, then the most recently active. */
  ordered(): ConvSummary[] {
    return [...this.convs.values()]
      .filter((c) => !c.hidden && !c.left)
      .sort((a, b) => Number(b.pinned) - Number(a.pinned) || (b.last?.ts ?? 0) - (a.last?.ts ?? 0) || b.version - a.version);
  }

  // ------------------------------------------------------------------ the open conversation

  open(conv: string | null): void {
    this.active = conv;
    this.changed();
    if (conv === null) return;
    const h = this.histories.get(conv);
    if (!h?.loaded) void this.loadNewest(conv);
    else this.markRead();
    const c = this.convs.get(conv);
    if (c?.kind === "direct" && !this.peerRead.has(conv)) void this.loadPeerRead(conv);
  }

  /** Messages of `conv` as shown: events and tombstones of held-back kinds left out. */
  shown(conv: string): Message[] {
    const c = this.convs.get(conv);
    const floor = Math.max(c?.cleared_seq ?? 0, 0);
    return this.view.history(conv).filter((m) => !EVENT_KINDS.has(m.kind) && m.seq > floor);
  }

  private async loadNewest(conv: string): Promise<void> {
    const h: HistoryState = { oldest: 0, more: false, loading: true, loaded: false };
    this.histories.set(conv, h);
    try {
      const page = await this.client!.pull(conv, { limit: PAGE });
      for (const m of page.items) this.take(m);
      h.oldest = page.items[0]?.seq ?? 0;
      h.more = page.more;
      h.loaded = true;
    } catch (err) {
      this.fail(err);
    } finally {
      h.loading = false;
      this.changed();
      if (this.active === conv) this.markRead();
    }
  }

  /** Opens `conv` at message `seq`: older pages are pulled until it is held (history stays contiguous). */
  async jumpTo(conv: string, seq: number): Promise<void> {
    if (!this.convs.has(conv)) await this.resync();
    this.focus = { conv, seq };
    this.open(conv);
    for (let pages = 0; pages < 100 && this.active === conv; pages++) {
      const h = this.histories.get(conv);
      if (h?.loaded && !h.loading && (h.oldest <= seq || !h.more)) break;
      if (h?.loaded && !h.loading) await this.loadOlder(conv);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.changed();
  }

  /** Pulls the page before the oldest message held (the chat view calls it when scrolled to the top). */
  async loadOlder(conv: string): Promise<void> {
    const h = this.histories.get(conv);
    if (!h || h.loading || !h.more || h.oldest <= 1) return;
    h.loading = true;
    this.changed();
    try {
      const page = await this.client!.pull(conv, { before: h.oldest, limit: PAGE });
      for (const m of page.items) this.take(m);
      h.oldest = page.items[0]?.seq ?? h.oldest;
      h.more = page.more && page.items.length > 0;
    } catch (err) {
      if (err instanceof FlareError && err.code === ErrorCode.GONE) h.more = false;
      else this.fail(err);
    } finally {
      h.loading = false;
      this.changed();
    }
  }

  private async loadPeerRead(conv: string): Promise<void> {
    const mine = this.shown(conv).filter((m) => m.sender === this.me);
    const last = mine[mine.length - 1] ?? (this.convs.get(conv)?.last?.sender === this.me ? this.convs.get(conv)?.last : undefined);
    if (!last) return;
    try {
      const r = await this.client!.readers(conv, last.seq);
      if (r.read.length) {
        this.peerRead.set(conv, Math.max(this.peerRead.get(conv) ?? 0, last.seq));
        this.peerDelivered.set(conv, Math.max(this.peerDelivered.get(conv) ?? 0, last.seq));
        this.changed();
      }
    } catch {
      // unknown: shown as sent
    }
  }

  /** Marks the open conversation read when the page is visible. */
  markRead(): void {
    const conv = this.active;
    const c = conv ? this.convs.get(conv) : undefined;
    if (!c || !conv || document.visibilityState !== "visible") return;
    if (c.read_seq >= c.max_seq) return;
    const seq = c.max_seq;
    c.read_seq = seq;
    c.unread = 0;
    c.unread_mentions = 0;
    this.changed();
    void this.client?.read(conv, seq).catch(() => undefined);
  }

  // ------------------------------------------------------------------ actions

  async sendText(conv: string, text: string, replyTo: number | null): Promise<void> {
    const body: Record<string, unknown> = { text };
    const mentions = [...text.matchAll(/@([A-Za-z0-9_.-]{1,64})/g)].map((m) => m[1] as string);
    const c = this.convs.get(conv);
    if (c?.kind === "group" && mentions.length) body["mentions"] = [...new Set(mentions)].slice(0, 100);
    if (replyTo !== null) body["reply_to"] = { seq: replyTo };
    await this.client!.enqueue(conv, body);
  }

  /** An API path (as the server gives them, "/v1/...") as a URL; absolute URLs (S3) stay as they are. */
  apiUrl(path: string): string {
    return path.startsWith("/") ? this.rest.baseUrl + path : path;
  }

  /**
   * Uploads `file` (POST /v1/media: an image as `image`, anything else as `file`) and sends it to `conv`
   * through the outbox. The upload shows as pending until it is stored.
   */
  sendFile(conv: string, file: File): Promise<void> {
    const upload: Upload = { id: crypto.randomUUID(), conv, name: file.name || t("image") };
    this.uploads = [...this.uploads, upload];
    this.changed();
    // One upload at a time, so that files arrive in the order they were picked, dropped or pasted.
    const run = this.uploading.then(() => this.uploadAndSend(conv, file, upload));
    this.uploading = run;
    return run;
  }

  private async uploadAndSend(conv: string, file: File, upload: Upload): Promise<void> {
    const kind = IMAGE_TYPES.has(file.type) ? "image" : "file";
    try {
      const info = await this.postMedia(file, kind);
      const body: Record<string, unknown> = { media_id: info["media_id"] };
      if (kind === "file" && file.name) body["name"] = file.name.slice(0, 255);
      await this.client!.enqueue(conv, body, { kind });
    } catch (err) {
      this.fail(err);
    } finally {
      this.uploads = this.uploads.filter((u) => u !== upload);
      this.changed();
    }
  }

  private async postMedia(file: File, kind: string): Promise<Record<string, unknown>> {
    const path = `/v1/media?kind=${kind}&name=${encodeURIComponent(file.name.slice(0, 255))}`;
    for (let attempt = 0; ; attempt++) {
      const token = await this.rest.accessToken(attempt > 0); // a 401 is answered once with a fresh token
      const resp = await fetch(this.apiUrl(path), { method: "POST", headers: { Authorization: `Bearer ${token}` }, body: file });
      if (resp.status === 401 && attempt === 0) continue;
      const json = (await resp.json().catch(() => ({}))) as Record<string, unknown>;
      if (resp.ok) return json;
      const error = (json["error"] ?? {}) as { code?: number; message?: string };
      throw new FlareError(error.code ?? resp.status, error.message ?? `upload failed: HTTP ${resp.status}`);
    }
  }

  /** The signed URLs of media `id`, fetched (or refreshed before they expire) in the background; null meanwhile. */
  mediaUrls(id: string): MediaUrls | "failed" | null {
    const got = this.media.get(id);
    const stale = got === undefined || (got !== "failed" && got.expires * 1000 < Date.now() + 30_000);
    if (stale && !this.mediaLoading.has(id)) void this.fetchMedia(id);
    return got ?? null;
  }

  async fetchMedia(id: string): Promise<MediaUrls | "failed"> {
    this.mediaLoading.add(id);
    let out: MediaUrls | "failed";
    try {
      const info = await this.rest.request("GET", `/v1/media/${encodeURIComponent(id)}`);
      const thumb = info["thumb_url"] as string | undefined;
      out = { url: this.apiUrl(info["url"] as string), thumb: thumb ? this.apiUrl(thumb) : null, expires: info["expires_at"] as number };
    } catch {
      out = "failed";
    } finally {
      this.mediaLoading.delete(id);
    }
    this.media.set(id, out);
    this.changed();
    return out;
  }

  async act(work: () => Promise<unknown>): Promise<boolean> {
    try {
      await work();
      return true;
    } catch (err) {
      this.fail(err);
      return false;
    }
  }

  fail(err: unknown): void {
    this.error = err instanceof Error ? err.message : String(err);
    this.changed();
  }

  async setFlag(conv: string, change: { pinned?: boolean; muted?: boolean; draft?: string }): Promise<void> {
    const c = this.convs.get(conv);
    if (c) Object.assign(c, change);
    this.changed();
    await this.act(() => this.client!.updateSettings(conv, change));
  }

  /** A direct conversation with `user` (made on the first message; listed at once). */
  async openDirect(user: string): Promise<string> {
    const peer = user.trim();
    const conv = `d:${[this.me, peer].sort().join(":")}`;
    if (!this.convs.has(conv)) {
      const found = await this.rest.users([peer]);
      if (!found.length) throw new FlareError(ErrorCode.NOT_FOUND, `no user ${peer}`);
      this.names.set(peer, found[0]?.["display_name"] || peer);
      this.putSummary(blankDirect(conv, peer));
      void this.watchPeers();
    }
    this.open(conv);
    return conv;
  }

  async createGroup(name: string, members: string[]): Promise<void> {
    const g = await this.rest.createGroup(name, members);
    await this.resync();
    this.open(g["conv"]);
  }
}

function blankDirect(conv: string, peer: string): ConvSummary {
  return {
    conv,
    kind: "direct",
    version: 0,
    max_seq: 0,
    read_seq: 0,
    unread: 0,
    unread_mentions: 0,
    member_count: 2,
    name: "",
    avatar: "",
    peer,
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
  };
}
