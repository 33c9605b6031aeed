/**
 * The REST API (docs/protocol.md §11) over `fetch`: accounts and tokens, where to connect, groups, messages
 * from backends and bots, push targets, admin calls.
 *
 * Every method is one HTTP request, except that a bearer call refreshes the access token first when it is
 * about to expire, and once more after a 401, when the client holds a refresh token. Nothing else is retried:
 * a failure throws {@link FlareError} with the server's code, message, `retryable` and `detail`; a network
 * failure throws {@link ConnectError}, a slow answer {@link TimeoutError}.
 */
import { ConnectError, ErrorCode, FlareError, TimeoutError } from "./errors.js";
import type { Body } from "./frames.js";

/** What `register`, `login` and `refresh` return (*Tokens* in protocol.md §11). */
export interface Tokens {
  user_id: string;
  access_token: string;
  refresh_token: string;
  token_type: "Bearer";
  /** Seconds. */
  expires_in: number;
}

/** The tokens a client holds, with the access token's expiry as an epoch-ms time (to persist across reloads). */
export interface TokenState {
  accessToken: string;
  refreshToken: string | null;
  /** Epoch ms; 0 when unknown. */
  expiresAt: number;
  userId: string;
}

/** A function that gives the current access token; `rejected` is true when the last one got a 401. */
export type TokenProvider = (rejected: boolean) => string | Promise<string>;

export interface RestOptions {
  /** An access token to start with (or restore `tokens`). */
  token?: string;
  /** Tokens saved from an earlier session (`onTokens`), e.g. in `localStorage`. */
  tokens?: TokenState;
  /** Sent as `X-Admin-Key` by the `admin*` calls. */
  adminKey?: string;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
  /** Refresh the access token this long before it expires (default 60 s). */
  refreshMarginMs?: number;
  /** Called with the new tokens after every login, registration and refresh (and null after logout). */
  onTokens?: (tokens: TokenState | null) => void;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  json?: unknown;
  params?: Record<string, string | number | boolean | null | undefined>;
  /** Send the admin key instead of the bearer token. */
  admin?: boolean;
  /** Send no credentials (login, registration, refresh, discovery). */
  anonymous?: boolean;
}

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export class RestClient {
  readonly baseUrl: string;
  private tokenState: TokenState | null;
  private readonly adminKey: string | undefined;
  private readonly timeoutMs: number;
  private readonly refreshMarginMs: number;
  private readonly onTokens: ((tokens: TokenState | null) => void) | undefined;
  private readonly fetchFn: typeof fetch;
  private refreshing: Promise<Tokens> | null = null;

  constructor(baseUrl: string, options: RestOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.tokenState =
      options.tokens ?? (options.token ? { accessToken: options.token, refreshToken: null, expiresAt: 0, userId: "" } : null);
    this.adminKey = options.adminKey;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
    this.onTokens = options.onTokens;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The current access token (null before login), as last set; see {@link accessToken} for a fresh one. */
  get token(): string | null {
    return this.tokenState?.accessToken ?? null;
  }

  set token(token: string | null) {
    this.tokenState = token ? { accessToken: token, refreshToken: null, expiresAt: 0, userId: "" } : null;
  }

  /** The tokens held (to save and give back as `tokens` after a reload), or null. */
  get tokens(): TokenState | null {
    return this.tokenState ? { ...this.tokenState } : null;
  }

  /** A new client for the same server and admin key, acting as the user of `token`. */
  withToken(token: string): RestClient {
    return new RestClient(this.baseUrl, {
      token,
      ...(this.adminKey !== undefined ? { adminKey: this.adminKey } : {}),
      timeoutMs: this.timeoutMs,
      fetch: this.fetchFn,
    });
  }

  /**
   * A valid access token: the held one, refreshed first when it expires within `refreshMarginMs` (or when
   * `forceRefresh`, e.g. after a 401) if a refresh token is held. Throws `FlareError` 401 without tokens.
   */
  async accessToken(forceRefresh = false): Promise<string> {
    const t = this.tokenState;
    if (t === null) throw new FlareError(ErrorCode.UNAUTHORIZED, "not logged in: no access token");
    const expiring = t.expiresAt > 0 && t.expiresAt - Date.now() < this.refreshMarginMs;
    if (t.refreshToken && (forceRefresh || expiring)) return (await this.refreshOnce(t.refreshToken)).access_token;
    return t.accessToken;
  }

  /** A token provider for `FlareClient`: each (re)connect gets a valid token, refreshed after a 401. */
  tokenProvider(): TokenProvider {
    return (rejected) => this.accessToken(rejected);
  }

  /**
   * Any REST call for which there is no method; `path` like `"/v1/me"`. Returns the decoded JSON, or null
   * for 204. Throws `FlareError` (with `detail` when the server gave one) for HTTP ≥ 400.
   */
  async request<T = Json>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const bearer = !options.admin && !options.anonymous && this.tokenState !== null;
    let token = bearer ? await this.accessToken() : null;
    let resp = await this.send(method, path, options, token);
    if (resp.status === 401 && token !== null && this.tokenState?.refreshToken && token === this.tokenState.accessToken) {
      await resp.body?.cancel();
      token = await this.accessToken(true);
      resp = await this.send(method, path, options, token);
    }
    if (resp.status >= 400) throw await errorOf(resp);
    if (resp.status === 204) return null as T;
    return (await resp.json()) as T;
  }

  private async send(method: string, path: string, options: RequestOptions, token: string | null): Promise<Response> {
    let url = this.baseUrl + path;
    const params = Object.entries(options.params ?? {}).filter(([, v]) => v !== undefined && v !== null);
    if (params.length) url += "?" + new URLSearchParams(params.map(([k, v]) => [k, String(v)])).toString();
    const headers: Record<string, string> = { Accept: "application/json" };
    if (token !== null) headers["Authorization"] = `Bearer ${token}`;
    if (options.admin && this.adminKey) headers["X-Admin-Key"] = this.adminKey;
    let body: string | undefined;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    try {
      return await this.fetchFn(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      if ((err as Error).name === "TimeoutError") throw new TimeoutError(`${method} ${path}: no answer within ${this.timeoutMs} ms`);
      throw new ConnectError(`${method} ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  private keep(out: Tokens): Tokens {
    this.tokenState = {
      accessToken: out.access_token,
      refreshToken: out.refresh_token ?? null,
      expiresAt: out.expires_in ? Date.now() + out.expires_in * 1000 : 0,
      userId: out.user_id,
    };
    this.onTokens?.(this.tokens);
    return out;
  }

  private refreshOnce(refreshToken: string): Promise<Tokens> {
    // One refresh at a time: a refresh token is single-use, and presenting it twice revokes the session.
    this.refreshing ??= this.refresh(refreshToken).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  // ------------------------------------------------------------------ accounts

  /** Where to connect: the WebSocket URLs of the gateway (no token needed). */
  async gateways(): Promise<string[]> {
    const out = await this.request("GET", "/v1/gateways", { anonymous: true });
    return out["websocket"] as string[];
  }

  /**
   * Creates an account (the username becomes the user id; passwords are 8-256 characters) and keeps its
   * tokens. Throws `FlareError` 409 if the name is taken, 403 if registration is closed (or needs `invite`).
   */
  async register(username: string, password: string, options: { displayName?: string; invite?: string } = {}): Promise<Tokens> {
    const json = { username, password, display_name: options.displayName ?? "", invite: options.invite };
    return this.keep(await this.request<Tokens>("POST", "/v1/auth/register", { json, anonymous: true }));
  }

  /** Logs in and keeps the tokens. Throws `FlareError` 401 on a wrong username or password, 429 when rate limited. */
  async login(username: string, password: string): Promise<Tokens> {
    return this.keep(await this.request<Tokens>("POST", "/v1/auth/login", { json: { username, password }, anonymous: true }));
  }

  /**
   * Trades a refresh token (single-use; default: the one held) for a new pair, and keeps it. Throws
   * `FlareError` 401 if it is unknown, used or expired (a reused one also revokes its session).
   */
  async refresh(refreshToken?: string): Promise<Tokens> {
    const token = refreshToken ?? this.tokenState?.refreshToken;
    if (!token) throw new FlareError(ErrorCode.UNAUTHORIZED, "no refresh token");
    const json = { refresh_token: token };
    return this.keep(await this.request<Tokens>("POST", "/v1/auth/refresh", { json, anonymous: true }));
  }

  /** Revokes this session's tokens (`everywhere`: every token of the user) and forgets them. */
  async logout(options: { everywhere?: boolean } = {}): Promise<void> {
    await this.request("POST", "/v1/auth/logout", { json: { everywhere: options.everywhere ?? false } });
    this.tokenState = null;
    this.onTokens?.(null);
  }

  /** This user's profile: `{user_id, display_name, avatar, username, created_at}`. */
  me(): Promise<Json> {
    return this.request("GET", "/v1/me");
  }

  /** Changes this user's display name and/or avatar; returns the profile. */
  updateMe(changes: { display_name?: string; avatar?: string }): Promise<Json> {
    return this.request("PATCH", "/v1/me", { json: changes });
  }

  /** Profiles of up to 500 users (unknown ids are left out). */
  async users(ids: string[]): Promise<Json[]> {
    return (await this.request("GET", "/v1/users", { params: { ids: ids.join(",") } }))["items"];
  }

  // ------------------------------------------------------------------ push targets

  /**
   * Registers where notifications reach `device` (the `device` of `FlareClient`): `provider` `"apns"`,
   * `"fcm"` or `"webpush"` (token: the subscription endpoint; `keys: {p256dh, auth}` required). Replaces the
   * device's previous registration; returns the push target. For Web Push, `subscribeWebPush` does it all.
   */
  registerPush(
    device: string,
    provider: "apns" | "fcm" | "webpush",
    token: string,
    options: { appId?: string; keys?: { p256dh: string; auth: string }; locale?: string } = {},
  ): Promise<Json> {
    const json = { provider, token, app_id: options.appId ?? "", keys: options.keys, locale: options.locale };
    return this.request("PUT", `/v1/me/devices/${encodeURIComponent(device)}/push`, { json });
  }

  /** Stops notifications to `device` (call it at logout); fine when nothing was registered. */
  async unregisterPush(device: string): Promise<void> {
    await this.request("DELETE", `/v1/me/devices/${encodeURIComponent(device)}/push`);
  }

  /** The push targets of this user's devices. */
  async devices(): Promise<Json[]> {
    return (await this.request("GET", "/v1/me/devices"))["items"];
  }

  // ------------------------------------------------------------------ groups

  /** Creates a group owned by this user; returns `{group_id, conv, name, ...}` (`conv` is `"g:<group_id>"`). */
  createGroup(name: string, members: string[], options: { groupId?: string; avatar?: string } = {}): Promise<Json> {
    const json = { name, members, group_id: options.groupId, avatar: options.avatar };
    return this.request("POST", "/v1/groups", { json });
  }

  group(groupId: string): Promise<Json> {
    return this.request("GET", `/v1/groups/${encodeURIComponent(groupId)}`);
  }

  /** Owner or admin: change the name and/or avatar. */
  updateGroup(groupId: string, changes: { name?: string; avatar?: string }): Promise<Json> {
    return this.request("PATCH", `/v1/groups/${encodeURIComponent(groupId)}`, { json: changes });
  }

  async groupMembers(groupId: string): Promise<Json[]> {
    return (await this.request("GET", `/v1/groups/${encodeURIComponent(groupId)}/members`))["items"];
  }

  /** Owner or admin: add users; returns those newly added. */
  async addMembers(groupId: string, userIds: string[]): Promise<string[]> {
    const out = await this.request("POST", `/v1/groups/${encodeURIComponent(groupId)}/members`, { json: { user_ids: userIds } });
    return out["added"];
  }

  async removeMember(groupId: string, userId: string): Promise<void> {
    await this.request("DELETE", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}`);
  }

  async leaveGroup(groupId: string): Promise<void> {
    await this.request("POST", `/v1/groups/${encodeURIComponent(groupId)}/leave`);
  }

  /** Owner only: `"admin"`, `"member"`, or `"owner"` (transfers ownership). */
  async setRole(groupId: string, userId: string, role: "owner" | "admin" | "member"): Promise<void> {
    await this.request("PUT", `/v1/groups/${encodeURIComponent(groupId)}/members/${encodeURIComponent(userId)}/role`, {
      json: { role },
    });
  }

  // ------------------------------------------------------------------ messages

  /**
   * Sends a message as this user (bots, backends): the WebSocket's send path and idempotency key, so a
   * retry with the same `cmid` stores it once. Not retried here. Returns `{conv, seq, msg_id, ts, duplicate}`.
   */
  sendMessage(conv: string, cmid: string, body: Body, kind = "text"): Promise<Json> {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(conv)}/messages`, { json: { cmid, kind, body } });
  }

  /** A page of messages, as `FlareClient.pull`: `{conv, items, max_seq, min_seq, more}`. */
  history(conv: string, options: { after?: number; before?: number; limit?: number } = {}): Promise<Json> {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(conv)}/messages`, {
      params: { after: options.after, before: options.before, limit: options.limit ?? 50 },
    });
  }

  /** Edit history of message `seq`: `{message, revisions: [{version, body, ts}]}`, oldest first. */
  revisions(conv: string, seq: number): Promise<Json> {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(conv)}/messages/${seq}/revisions`);
  }

  /** One page of the conversation list changed since `since`: `{items, version, more}`. */
  conversations(since = 0, limit = 100): Promise<Json> {
    return this.request("GET", "/v1/conversations", { params: { since, limit } });
  }

  // ------------------------------------------------------------------ admin (X-Admin-Key)

  /** Admin: create a user (a business backend that owns the accounts). Throws 409 if the id exists. */
  adminCreateUser(userId: string, options: { displayName?: string; avatar?: string } = {}): Promise<Json> {
    const json = { user_id: userId, display_name: options.displayName ?? "", avatar: options.avatar ?? "" };
    return this.request("POST", "/v1/admin/users", { json, admin: true });
  }

  /** Admin: create up to 1000 users; returns `{created, existing}`. */
  adminImportUsers(userIds: string[]): Promise<{ created: string[]; existing: string[] }> {
    return this.request("POST", "/v1/admin/users:batch", { json: { users: userIds.map((u) => ({ user_id: u })) }, admin: true });
  }

  /** Admin: an access token for `userId`, valid `ttlS` seconds (default: the server's). */
  async adminIssueToken(userId: string, ttlS?: number): Promise<string> {
    const json = ttlS ? { ttl_s: ttlS } : undefined;
    return (await this.request("POST", `/v1/admin/users/${encodeURIComponent(userId)}/tokens`, { json, admin: true }))["access_token"];
  }

  /** Admin: access tokens for up to 1000 users, `{user_id: token}`. */
  async adminIssueTokens(userIds: string[], ttlS?: number): Promise<Record<string, string>> {
    return (await this.request("POST", "/v1/admin/tokens", { json: { user_ids: userIds, ttl_s: ttlS }, admin: true }))["tokens"];
  }

  /** Admin: revoke every token of a user. */
  async adminRevokeUser(userId: string): Promise<void> {
    await this.request("POST", `/v1/admin/users/${encodeURIComponent(userId)}/revoke`, { admin: true });
  }
}

async function errorOf(resp: Response): Promise<FlareError> {
  const text = await resp.text();
  try {
    const err = JSON.parse(text)["error"];
    if (typeof err?.code === "number") return new FlareError(err.code, err.message, err.retryable === true, err.detail ?? null);
  } catch {
    // not the documented error shape (a proxy's page): fall through
  }
  const code = resp.status >= 500 ? ErrorCode.INTERNAL : resp.status;
  return new FlareError(code, `HTTP ${resp.status}: ${text.slice(0, 200)}`, resp.status >= 500);
}
