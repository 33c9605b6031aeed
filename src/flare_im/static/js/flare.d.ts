// Flare JavaScript SDK 0.1.0. Built from clients/js/src by clients/js/scripts/build.mjs; do not edit.
/** The SDK's version: always the server's (`flare_im.__version__`); a test checks that they agree. */
export declare const VERSION = "0.1.0";
/** The client protocol version this SDK speaks (docs/protocol.md). */
export declare const PROTOCOL = 1;
/**
 * One error tree (docs/protocol.md §5): the server's error codes, and the three things a call can throw.
 *
 * - {@link FlareError}: the server answered with an error (`code`, `message`, `retryable`, `detail`).
 * - {@link Disconnected}: the connection closed before the reply came; the request may or may not have been
 *   processed (sends and operations retry it themselves with the same idempotency key).
 * - {@link TimeoutError}: no reply (or no connection, while reconnecting) within the time allowed.
 */
/** Error codes of the protocol: HTTP statuses, the same on the WebSocket and over REST. */
export declare const ErrorCode: {
	readonly BAD_REQUEST: 400;
	readonly UNAUTHORIZED: 401;
	readonly FORBIDDEN: 403;
	readonly NOT_FOUND: 404;
	readonly METHOD_NOT_ALLOWED: 405;
	readonly REQUEST_TIMEOUT: 408;
	readonly CONFLICT: 409;
	readonly GONE: 410;
	readonly TOO_LARGE: 413;
	readonly OUT_OF_RANGE: 416;
	readonly INVALID: 422;
	readonly RATE_LIMITED: 429;
	readonly BLOCKED: 451;
	readonly INTERNAL: 500;
	readonly UNAVAILABLE: 503;
};
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];
/** WebSocket close codes the server sends (docs/protocol.md §5). */
export declare const CloseCode: {
	readonly NORMAL: 1000;
	readonly GOING_AWAY: 1001;
	readonly TOO_BIG: 1009;
	readonly TRY_AGAIN_LATER: 1013;
	readonly AUTH_FAILED: 4001;
	readonly AUTH_TIMEOUT: 4002;
	readonly PROTOCOL_VIOLATION: 4003;
	readonly REPLACED: 4004;
	readonly SLOW_CONSUMER: 4008;
	readonly RATE_LIMITED: 4029;
	readonly RESTART: 4100;
};
/** The server answered a request with an error. Retry only when `retryable` is true. */
export declare class FlareError extends Error {
	/** The protocol's error code (an HTTP status, {@link ErrorCode}). */
	readonly code: number;
	/** Whether the same request may succeed later (429, 500, 503). */
	readonly retryable: boolean;
	/** Machine-readable context of some errors: 409 on an edit (`version`, `body`, `edited_at`), 410. */
	readonly detail: Record<string, unknown> | null;
	name: string;
	constructor(
	/** The protocol's error code (an HTTP status, {@link ErrorCode}). */
	code: number, message: string, 
	/** Whether the same request may succeed later (429, 500, 503). */
	retryable?: boolean, 
	/** Machine-readable context of some errors: 409 on an edit (`version`, `body`, `edited_at`), 410. */
	detail?: Record<string, unknown> | null);
}
/** The connection closed before the reply came (or there was none). The request may have been processed. */
export declare class Disconnected extends Error {
	name: string;
}
/** No reply, connection or item within the time allowed. */
export declare class TimeoutError extends Error {
	name: string;
}
/** The WebSocket could not be opened (refused, DNS, TLS, HTTP error on the upgrade). */
export declare class ConnectError extends Error {
	name: string;
}
/**
 * The frames of docs/protocol.md §3-4 as TypeScript types, with the wire's field names (snake_case), so that
 * protocol.md's tables describe them exactly. The server leaves out fields at their default; {@link withDefaults}
 * fills them in, so every object the SDK hands out is complete.
 */
/** A message body: app-defined content checked by the server against the message's kind. */
type Body$1 = Record<string, unknown>;
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
	body: Body$1;
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
	body: Body$1 | null;
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
export type ServerFrame = {
	type: string;
	[field: string]: unknown;
};
/** A client frame (a request): `type` and `id`, then its fields; `undefined` fields are not sent. */
export type ClientFrame = {
	type: string;
	id: number;
	[field: string]: unknown;
};
/** A `Message` with the omitted defaults filled in (a `msg` push's `type` dropped). */
export declare function toMessage(raw: Record<string, unknown>): Message;
/** The frame with every omitted field at its protocol default, nested messages and summaries included. */
export declare function withDefaults(frame: ServerFrame): ServerFrame;
export type Encoding = "json" | "msgpack";
/** Turns frames into WebSocket messages and back. A custom codec (another MessagePack library) fits here. */
export interface Codec {
	readonly encoding: Encoding;
	/** A string is sent as a text message, bytes as a binary one. */
	encode(frame: ClientFrame): string | Uint8Array;
	/** Decodes one received message; throws on undecodable input. */
	decode(data: string | ArrayBuffer | Uint8Array): ServerFrame;
}
/** Drops `undefined` fields: JSON.stringify does, and the MessagePack writer does too. */
export declare const jsonCodec: Codec;
export declare const msgpackCodec: Codec;
/** The codec of an encoding name. */
export declare function codecFor(encoding: Encoding): Codec;
/**
 * The subset of MessagePack that Flare's frames use, in about 200 lines and with no dependency: nil, booleans,
 * integers, float64, UTF-8 strings, binary, arrays and maps with string keys. Extension types (timestamps) are
 * not used by the protocol and are refused when decoded.
 *
 * Why not `@msgpack/msgpack`: the SDK ships as one self-contained ES module that a browser loads without a
 * bundler or an import map, and this subset is a few kilobytes where the full codec is tens. Any codec with
 * the same two functions can be given to the client instead ({@link Codec}).
 *
 * Integers decode to `number`. The protocol keeps every integer a JavaScript number can hold exactly (ids
 * below 2^53; `msg_id` is a string); a 64-bit integer above 2^53 would lose precision.
 */
/** Encodes a value (null, boolean, number, bigint, string, Uint8Array, array, plain object) as MessagePack. */
export declare function packMsgpack(value: unknown): Uint8Array;
/** Decodes one MessagePack value; throws `RangeError` on truncated or trailing input, `TypeError` on ext types. */
export declare function unpackMsgpack(data: Uint8Array | ArrayBuffer): unknown;
/** Ids the client makes: conversation ids of direct chats, and idempotency keys. */
/**
 * The id of the direct conversation of users `a` and `b`, in either order: `d:` and the two ids in ASCII
 * order (`directConv("bob", "alice") === "d:alice:bob"`). There is no create step: the first send creates it.
 * Use the ids the server returned (normal form, docs/protocol.md §1).
 */
export declare function directConv(a: string, b: string): string;
/** A random 32-hex-digit id (a UUID's 128 bits), for cmids and op ids. */
export declare function newId(): string;
export declare class ConvOrder {
	/** Every seq up to this one has been seen. */
	contiguous: number;
	/** Seen seqs beyond `contiguous`; null: this device's own message, not yielded. */
	readonly ahead: Map<number, Message | null>;
	pulling: boolean;
	/** Pull at least up to this seq. */
	wanted: number;
}
export interface PageResult {
	/** Messages now ready, in seq order. */
	ready: Message[];
	/** The gap is closed (or the server has nothing newer): stop pulling. */
	done: boolean;
}
export declare class Ordering {
	private readonly convs;
	/** The state of `conv`, created empty when unknown. */
	state(conv: string): ConvOrder;
	/** The seq up to which every message of `conv` has been seen (0 if none). */
	localMax(conv: string): number;
	/**
	 * Seq `seq` of `conv` was seen: a pushed `message`, or (null) one this device stored itself. Returns the
	 * messages that became ready, in order; a duplicate returns nothing. Check {@link needsPull} afterwards.
	 */
	seen(conv: string, seq: number, message: Message | null): Message[];
	/** Something is held beyond a gap and no pull is running: start one (and set `pulling`). */
	needsPull(conv: string): boolean;
	/** Seq `seq` of `conv` exists (a sync's `max_seq`, an own event to echo): pull up to it. */
	want(conv: string, seq: number): void;
	/** Whether `conv` is known to be behind: something wanted or held beyond what was seen. */
	isBehind(conv: string): boolean;
	/** Every conversation that {@link isBehind}. */
	behind(): string[];
	/**
	 * A page pulled with `after` = `contiguous`, ascending. A first item beyond `contiguous + 1` means the seqs
	 * before it are not readable (below the user's floor, or a seq skipped by a failed write): they are passed.
	 */
	page(conv: string, items: readonly Message[], more: boolean): PageResult;
	/** History below `minSeq` is gone for this user (a 410): resume from there. Returns what became ready. */
	floor(conv: string, minSeq: number): Message[];
	private skipTo;
}
export declare class ConversationView {
	/** conv → seq → message in its current state (operation events are kept at their own seqs too). */
	readonly messages: Map<string, Map<number, Message>>;
	/** conv → seqs this user deleted for itself. */
	readonly hidden: Map<string, Set<number>>;
	/**
	 * Adds a message or an operation event; an event also changes its target: recall and delete empty it (and
	 * scrub the quotes and edit events of it), edit replaces its body when newer, react and unreact change its
	 * reactions. Feed events in seq order per conversation; a seq already applied is ignored.
	 */
	apply(event: Message): void;
	/** Marks `hidden.seqs` as deleted for this user: held copies become tombstones, and so do later arrivals. */
	applyHidden(hidden: Pick<Hidden, "conv" | "seqs">): void;
	/** What the user sees of `conv`: messages in seq order, deleted-for-me ones as `hidden` tombstones. */
	history(conv: string): Message[];
	/** One message of `conv` in its current state, if held. */
	get(conv: string, seq: number): Message | undefined;
}
export type Listener<T> = (item: T) => void;
export declare class Stream<T> {
	readonly name: string;
	readonly limit: number;
	private readonly queue;
	private readonly waiters;
	private readonly listeners;
	/** Items dropped because the queue was full. */
	dropped: number;
	constructor(name: string, limit: number);
	/** Delivers an item: to every listener, then to the oldest waiting `next()` or the queue. */
	push(item: T): void;
	/** Calls `fn` with every later item; returns the function that stops it. */
	on(fn: Listener<T>): () => void;
	/** How many items are queued. */
	get size(): number;
	/** The next queued item, or the next to arrive; rejects with `TimeoutError` after `timeoutMs`. */
	next(timeoutMs?: number): Promise<T>;
	/** Every item, forever (until the loop is left). */
	[Symbol.asyncIterator](): AsyncGenerator<T, never, undefined>;
}
export interface OutboxEntry {
	/** The idempotency key, fixed when the entry is written. */
	cmid: string;
	conv: string;
	kind: string;
	body: Body$1;
	/** Epoch ms when it was written. */
	createdAt: number;
	/** Sending order (increasing). */
	order: number;
	/** The user it is sent as (set at its first attempt; `""` until then). */
	user: string;
	/** Epoch ms of the first time it was put on the wire (0: never). */
	firstAttemptAt: number;
	/** Set when the server refused it for good (a non-retryable error): it stays until retried or discarded. */
	error: {
		code: number;
		message: string;
	} | null;
}
/** Where outbox entries are kept. Each call is atomic; `list` returns entries in `order`. */
export interface OutboxStore {
	list(): Promise<OutboxEntry[]>;
	/** Adds or replaces the entry with the same `cmid`. */
	put(entry: OutboxEntry): Promise<void>;
	delete(cmid: string): Promise<void>;
}
/** Entries in memory: a Node process, tests, or a browser without IndexedDB (private modes). */
export declare class MemoryOutboxStore implements OutboxStore {
	private readonly entries;
	list(): Promise<OutboxEntry[]>;
	put(entry: OutboxEntry): Promise<void>;
	delete(cmid: string): Promise<void>;
}
/**
 * Entries in IndexedDB database `name` (object store `entries`, keyed by `cmid`): they survive reloads. Use
 * one database per user and device when a browser profile signs in as several users.
 */
export declare class IndexedDbOutboxStore implements OutboxStore {
	readonly name: string;
	private readonly factory;
	private db;
	constructor(name?: string, factory?: IDBFactory);
	private open;
	private run;
	list(): Promise<OutboxEntry[]>;
	put(entry: OutboxEntry): Promise<void>;
	delete(cmid: string): Promise<void>;
	/** Closes the database connection (a later call opens it again). */
	close(): Promise<void>;
}
/** IndexedDB where the runtime has it (browsers), else memory (Node). */
export declare function defaultOutboxStore(name?: string): OutboxStore;
/** What happened to an entry: written, sent (with its ack), or refused for good (with the error). */
export type OutboxEvent = {
	type: "queued";
	entry: OutboxEntry;
} | {
	type: "sent";
	entry: OutboxEntry;
	ack: Ack;
} | {
	type: "failed";
	entry: OutboxEntry;
	error: FlareError;
};
/** What the outbox needs of a client: who it is, whether it is connected, and two requests. */
export interface OutboxTransport {
	readonly user: string;
	readonly connected: boolean;
	/** Sends the entry with its `cmid`, retrying like `send`; the ack, or throws. */
	sendEntry(entry: OutboxEntry): Promise<Ack>;
	/** The entry's message if the server stored it (looked up in its conversation's recent history), else null. */
	findStored(entry: OutboxEntry): Promise<Ack | null>;
}
export declare class Outbox {
	readonly store: OutboxStore;
	private readonly transport;
	private readonly idempotencyWindowMs;
	/** Every change of an entry; `client.on("outbox", fn)` listens to it. */
	readonly events: Stream<OutboxEvent>;
	private flushing;
	private again;
	private readonly waiters;
	/** The outcomes of the latest entries, for a `settled` call that comes after them (bounded). */
	private readonly results;
	constructor(store: OutboxStore, transport: OutboxTransport, idempotencyWindowMs: number, maxQueued: number);
	/** Writes a message to the store (it is kept from now on), then sends it when connected. */
	enqueue(conv: string, body: Body$1, kind: string, cmid: string): Promise<OutboxEntry>;
	/**
	 * Resolves with the ack once the entry `cmid` is sent (at once if it was sent lately), rejects with the
	 * `FlareError` if it is refused, and with a `TypeError` if the outbox holds no such entry.
	 */
	settled(cmid: string): Promise<Ack>;
	/** The entries not sent yet (including refused ones, with `error`), in order. */
	list(): Promise<OutboxEntry[]>;
	/** Clears a refused entry's error and sends it again (same `cmid`). */
	retry(cmid: string): Promise<void>;
	/** Removes an entry without sending it (it may already have been stored if it was attempted). */
	discard(cmid: string): Promise<void>;
	/** Sends every pending entry, one at a time in order, while connected. Concurrent calls share one pass. */
	flush(): Promise<void>;
	private drain;
	private remember;
	private take;
}
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
export type Json = Record<string, any>;
export declare class RestClient {
	readonly baseUrl: string;
	private tokenState;
	private readonly adminKey;
	private readonly timeoutMs;
	private readonly refreshMarginMs;
	private readonly onTokens;
	private readonly fetchFn;
	private refreshing;
	constructor(baseUrl: string, options?: RestOptions);
	/** The current access token (null before login), as last set; see {@link accessToken} for a fresh one. */
	get token(): string | null;
	set token(token: string | null);
	/** The tokens held (to save and give back as `tokens` after a reload), or null. */
	get tokens(): TokenState | null;
	/** A new client for the same server and admin key, acting as the user of `token`. */
	withToken(token: string): RestClient;
	/**
	 * A valid access token: the held one, refreshed first when it expires within `refreshMarginMs` (or when
	 * `forceRefresh`, e.g. after a 401) if a refresh token is held. Throws `FlareError` 401 without tokens.
	 */
	accessToken(forceRefresh?: boolean): Promise<string>;
	/** A token provider for `FlareClient`: each (re)connect gets a valid token, refreshed after a 401. */
	tokenProvider(): TokenProvider;
	/**
	 * Any REST call for which there is no method; `path` like `"/v1/me"`. Returns the decoded JSON, or null
	 * for 204. Throws `FlareError` (with `detail` when the server gave one) for HTTP ≥ 400.
	 */
	request<T = Json>(method: string, path: string, options?: RequestOptions): Promise<T>;
	private send;
	private keep;
	private refreshOnce;
	/** Where to connect: the WebSocket URLs of the gateway (no token needed). */
	gateways(): Promise<string[]>;
	/**
	 * Creates an account (the username becomes the user id; passwords are 8-256 characters) and keeps its
	 * tokens. Throws `FlareError` 409 if the name is taken, 403 if registration is closed (or needs `invite`).
	 */
	register(username: string, password: string, options?: {
		displayName?: string;
		invite?: string;
	}): Promise<Tokens>;
	/** Logs in and keeps the tokens. Throws `FlareError` 401 on a wrong username or password, 429 when rate limited. */
	login(username: string, password: string): Promise<Tokens>;
	/**
	 * Trades a refresh token (single-use; default: the one held) for a new pair, and keeps it. Throws
	 * `FlareError` 401 if it is unknown, used or expired (a reused one also revokes its session).
	 */
	refresh(refreshToken?: string): Promise<Tokens>;
	/** Revokes this session's tokens (`everywhere`: every token of the user) and forgets them. */
	logout(options?: {
		everywhere?: boolean;
	}): Promise<void>;
	/** This user's profile: `{user_id, display_name, avatar, username, created_at}`. */
	me(): Promise<Json>;
	/** Changes this user's display name and/or avatar; returns the profile. */
	updateMe(changes: {
		display_name?: string;
		avatar?: string;
	}): Promise<Json>;
	/** Profiles of up to 500 users (unknown ids are left out). */
	users(ids: string[]): Promise<Json[]>;
	/**
	 * Registers where notifications reach `device` (the `device` of `FlareClient`): `provider` `"apns"`,
	 * `"fcm"` or `"webpush"` (token: the subscription endpoint; `keys: {p256dh, auth}` required). Replaces the
	 * device's previous registration; returns the push target. For Web Push, `subscribeWebPush` does it all.
	 */
	registerPush(device: string, provider: "apns" | "fcm" | "webpush", token: string, options?: {
		appId?: string;
		keys?: {
			p256dh: string;
			auth: string;
		};
		locale?: string;
	}): Promise<Json>;
	/** Stops notifications to `device` (call it at logout); fine when nothing was registered. */
	unregisterPush(device: string): Promise<void>;
	/** The push targets of this user's devices. */
	devices(): Promise<Json[]>;
	/** Creates a group owned by this user; returns `{group_id, conv, name, ...}` (`conv` is `"g:<group_id>"`). */
	createGroup(name: string, members: string[], options?: {
		groupId?: string;
		avatar?: string;
	}): Promise<Json>;
	group(groupId: string): Promise<Json>;
	/** Owner or admin: change the name and/or avatar. */
	updateGroup(groupId: string, changes: {
		name?: string;
		avatar?: string;
	}): Promise<Json>;
	groupMembers(groupId: string): Promise<Json[]>;
	/** Owner or admin: add users; returns those newly added. */
	addMembers(groupId: string, userIds: string[]): Promise<string[]>;
	removeMember(groupId: string, userId: string): Promise<void>;
	leaveGroup(groupId: string): Promise<void>;
	/** Owner only: `"admin"`, `"member"`, or `"owner"` (transfers ownership). */
	setRole(groupId: string, userId: string, role: "owner" | "admin" | "member"): Promise<void>;
	/**
	 * Sends a message as this user (bots, backends): the WebSocket's send path and idempotency key, so a
	 * retry with the same `cmid` stores it once. Not retried here. Returns `{conv, seq, msg_id, ts, duplicate}`.
	 */
	sendMessage(conv: string, cmid: string, body: Body$1, kind?: string): Promise<Json>;
	/** A page of messages, as `FlareClient.pull`: `{conv, items, max_seq, min_seq, more}`. */
	history(conv: string, options?: {
		after?: number;
		before?: number;
		limit?: number;
	}): Promise<Json>;
	/** Edit history of message `seq`: `{message, revisions: [{version, body, ts}]}`, oldest first. */
	revisions(conv: string, seq: number): Promise<Json>;
	/** One page of the conversation list changed since `since`: `{items, version, more}`. */
	conversations(since?: number, limit?: number): Promise<Json>;
	/** Admin: create a user (a business backend that owns the accounts). Throws 409 if the id exists. */
	adminCreateUser(userId: string, options?: {
		displayName?: string;
		avatar?: string;
	}): Promise<Json>;
	/** Admin: create up to 1000 users; returns `{created, existing}`. */
	adminImportUsers(userIds: string[]): Promise<{
		created: string[];
		existing: string[];
	}>;
	/** Admin: an access token for `userId`, valid `ttlS` seconds (default: the server's). */
	adminIssueToken(userId: string, ttlS?: number): Promise<string>;
	/** Admin: access tokens for up to 1000 users, `{user_id: token}`. */
	adminIssueTokens(userIds: string[], ttlS?: number): Promise<Record<string, string>>;
	/** Admin: revoke every token of a user. */
	adminRevokeUser(userId: string): Promise<void>;
}
/** The part of the WebSocket API the client uses: the browser's, Node's (22+, or 20 with
 * `--experimental-websocket`), or the `ws` package's. */
export interface WebSocketLike {
	binaryType: string;
	send(data: string | Uint8Array): void;
	close(code?: number, reason?: string): void;
	onopen: ((ev: any) => void) | null;
	onmessage: ((ev: {
		data: unknown;
	}) => void) | null;
	onclose: ((ev: {
		code: number;
	}) => void) | null;
	onerror: ((ev: any) => void) | null;
}
export type WebSocketFactory = new (url: string, protocols?: string | string[]) => WebSocketLike;
export interface FlareClientOptions {
	/** `"json"` (text frames, default) or `"msgpack"` (binary frames); the API is the same. */
	encoding?: Encoding;
	/** A codec to use instead of the built-in one of `encoding` (e.g. one built on `@msgpack/msgpack`). */
	codec?: Codec;
	/** How long a request waits for its reply, and for the connection while reconnecting (default 10 s). */
	requestTimeoutMs?: number;
	/** Reconnect after a drop (default true). */
	reconnect?: boolean;
	/** First reconnect pause, doubled after each failed attempt up to `maxBackoffMs` (defaults 50 ms, 5 s). */
	initialBackoffMs?: number;
	maxBackoffMs?: number;
	/** Tries of a send or operation before its last error is thrown (default 8). */
	attempts?: number;
	/** Informational, sent in `auth` (default `"js"`). */
	platform?: string;
	/** `messages()` also yields this device's own messages and operation events, as stored. */
	echoOwn?: boolean;
	/** Called with every decoded frame the server sends, before the client handles it (counting, diagnostics). */
	onFrame?: (frame: ServerFrame) => void;
	/** The WebSocket class; default: the global one. */
	WebSocket?: WebSocketFactory;
	/** Where the outbox keeps messages (default: IndexedDB `flare-outbox:<device>` if available, else memory);
	 * `false`: no outbox. */
	outbox?: OutboxStore | false;
	/** An outbox entry first attempted longer ago than this is looked up before it is sent again (default
	 * 240 s, under the server's 300 s `idempotency_window_s`). */
	idempotencyWindowMs?: number;
	/** Items each stream queues for `next*()` and `for await` readers before dropping the oldest (default
	 * 10,000); 0: no queues, listeners (`on`) only. */
	maxQueued?: number;
	/** With nothing received for this long, send a `ping`; no answer within `requestTimeoutMs` drops the
	 * connection (then reconnects). Default: the server's `heartbeat_s`; 0: off. */
	livenessMs?: number;
}
export interface SendOptions {
	/** Message kind (default `"text"`). */
	kind?: string;
	/** Idempotency key (default: a new random id). */
	cmid?: string;
	attempts?: number;
}
export interface OperateOptions {
	body?: Body$1;
	baseVersion?: number;
	emoji?: string;
	opid?: string;
	attempts?: number;
}
export interface SettingsChange {
	pinned?: boolean;
	muted?: boolean;
	hidden?: boolean;
	draft?: string;
	/** Clear the history for this user up to this seq (never moves back). */
	clearTo?: number;
}
/** The pushes and state changes `on()` listens to. */
export interface ClientEvents {
	message: Message;
	receipt: Receipt;
	typing: TypingNotice;
	presence: PresenceState;
	settings: ConvSettings;
	hidden: Hidden;
	outbox: OutboxEvent;
	connected: AuthOk;
	disconnected: {
		code: number | null;
	};
}
export declare class FlareClient {
	/** The access token, or a function giving one for each (re)connect (`RestClient.tokenProvider()`). */
	token: string | TokenProvider;
	readonly url: string;
	readonly device: string;
	/** Whether a drop is followed by a reconnect (may be changed at any time). */
	reconnect: boolean;
	echoOwn: boolean;
	onFrame: ((frame: ServerFrame) => void) | undefined;
	/** The authenticated user id ("" before the first `auth_ok`). */
	user: string;
	session: string;
	/** The conversation-list version of the last sync. */
	version: number;
	/** Server clock minus this clock, in ms, as of the last `auth_ok`. */
	skewMs: number;
	lastCloseCode: number | null;
	lastKick: Kick | null;
	/** Successful reconnects so far. */
	reconnects: number;
	/** The outbox, or null with `outbox: false`. */
	readonly outbox: Outbox | null;
	private readonly codec;
	private readonly requestTimeoutMs;
	private readonly initialBackoffMs;
	private readonly maxBackoffMs;
	private readonly attempts;
	private readonly platform;
	private readonly WS;
	private readonly livenessOption;
	private ws;
	private isConnected;
	private closing;
	private reconnecting;
	private tokenRejected;
	private nextId;
	private readonly pending;
	private connectedWaiters;
	private readonly ordering;
	private readonly fills;
	private readonly refill;
	private sleeping;
	private liveness;
	private livenessMs;
	private lastInbound;
	private readonly streams;
	constructor(url: string, token: string | TokenProvider, device: string, options?: FlareClientOptions);
	/** A client for the user of `rest`: the gateway from `GET /v1/gateways`, tokens from `rest` (refreshed). */
	static fromRest(rest: RestClient, device: string, options?: FlareClientOptions): Promise<FlareClient>;
	/**
	 * Opens the WebSocket and authenticates; returns `auth_ok`. Throws `FlareError` 401 for a bad or expired
	 * token (503 while the server shuts down) and `ConnectError` if the server cannot be reached; the first
	 * connect is not retried. Then sends what the outbox holds. It does not sync: call `catchUp()`.
	 */
	connect(): Promise<AuthOk>;
	private resolveToken;
	private open;
	/** Closes for good (no reconnect); pending requests fail with `Disconnected`. */
	close(): Promise<void>;
	/** Cuts the connection as a network failure would (no waiting for a close handshake); tests use it. */
	dropConnection(): void;
	/** Authenticated and usable now (false while reconnecting and after `close`). */
	get connected(): boolean;
	/** Resolves once connected (e.g. after a drop, for the reconnect); rejects with `TimeoutError`. */
	waitConnected(timeoutMs?: number): Promise<void>;
	/** Listens to a stream of pushes or state changes; returns the function that stops listening. */
	on<K extends keyof ClientEvents>(event: K, listener: (item: ClientEvents[K]) => void): () => void;
	/** Forgets the socket and fails what waits on it; returns whether it was authenticated. */
	private detach;
	private onClosed;
	private reconnectLoop;
	private sleep;
	private armLiveness;
	private request;
	private call;
	/** Sends the frame `make()` builds (the same idempotency key each time) until it is answered. */
	private retrying;
	/**
	 * Sends a message and resolves with the server's `Ack` (`seq`, `msg_id`, `ts`, `duplicate`; `body` when the
	 * content filter masked it) once it is stored durably. `content` is the text of a text message, or the body
	 * of any kind (`options.kind`). Retried up to `attempts` times with the same `cmid` on timeouts, drops and
	 * retryable errors (429, 500, 503). Not retried: `FlareError` 403, 404, 413, 422, 451.
	 */
	send(conv: string, content: string | Body$1, options?: SendOptions): Promise<Ack>;
	/**
	 * Writes a message to the outbox and sends it when connected (now, or after a reconnect or a reload), once.
	 * Resolves with the entry as soon as it is stored; `outbox.settled(entry.cmid)` resolves with its ack, and
	 * `on("outbox", ...)` tells what happens to every entry. Throws if the client has no outbox.
	 */
	enqueue(conv: string, content: string | Body$1, options?: {
		kind?: string;
		cmid?: string;
	}): Promise<OutboxEntry>;
	private outboxTransport;
	/** Looks for this user's message `entry.cmid` in the newest pages of its conversation, back to a minute
	 * before its first attempt (server clock). */
	private findStored;
	/** Sends `text` quoting message `seq` (the server puts a snapshot of it in `body.reply_to`). */
	reply(conv: string, seq: number, text: string, options?: SendOptions): Promise<Ack>;
	/**
	 * Applies `op` (`recall`, `delete`, `edit`, `react`, `unreact`) to message `seq`; retries reuse the op id.
	 * Resolves with the `Ack` of the operation's event (its own `seq`), with `target` and the target's `version`
	 * afterwards. Errors (`FlareError`, not retried): 403, 404, 409 (`detail`: the current version), 410, 422.
	 */
	operate(conv: string, seq: number, op: "recall" | "delete" | "edit" | "react" | "unreact", options?: OperateOptions): Promise<Ack>;
	/** Recalls message `seq` for everyone (its sender within `recall_window_s`; group owners and admins). */
	recall(conv: string, seq: number, options?: OperateOptions): Promise<Ack>;
	/** Deletes message `seq` for everyone (the same rules as recall). */
	delete(conv: string, seq: number, options?: OperateOptions): Promise<Ack>;
	/** Replaces the text of this user's text message `seq`, made from version `baseVersion`; 409 if stale. */
	edit(conv: string, seq: number, text: string, baseVersion: number, options?: OperateOptions): Promise<Ack>;
	/** Adds this user's `emoji` reaction to message `seq` (`remove: true` takes it back); 409 if already so. */
	react(conv: string, seq: number, emoji: string, options?: OperateOptions & {
		remove?: boolean;
	}): Promise<Ack>;
	/** Hides message `seq` from this user on all of its devices; resolves with the `Hidden` change (which, with
	 * `echoOwn`, also goes to this device's hidden stream). */
	deleteForMe(conv: string, seq: number, options?: {
		attempts?: number;
	}): Promise<Hidden>;
	/** Copies messages `seqs` of `conv` into `to`: one as it is, several merged (titled `title`). */
	forward(conv: string, seqs: number[], to: string, options?: {
		title?: string;
		cmid?: string;
		attempts?: number;
	}): Promise<Ack>;
	/** This device stored `seq`: skip it in the stream, or (echoOwn) pull it into the stream. */
	private own;
	/** Marks everything up to `seq` as read; the user's other devices (and a direct peer) get a receipt. */
	read(conv: string, seq: number): Promise<void>;
	/** Reports that this device has everything up to `seq`; a direct peer gets a `delivered` receipt. */
	delivered(conv: string, seq: number): Promise<void>;
	/** Who has read message `seq`: `read` and `unread` member ids (without the sender and later joiners). */
	readers(conv: string, seq: number): Promise<ReadersList>;
	/** Watches these users' presence (replaces the list; `[]` stops); resolves with their current states. */
	watchPresence(users: string[]): Promise<PresenceState[]>;
	/** Changes this user's settings of `conv` (only the fields given); resolves with the resulting settings. */
	updateSettings(conv: string, change: SettingsChange): Promise<ConvSettings>;
	/** Tells the other members of `conv` that this user is typing (at most one notice per 2 s is forwarded). */
	typing(conv: string): Promise<void>;
	/** Round trip to the server; resolves with its time in epoch ms. */
	ping(): Promise<number>;
	/**
	 * Every conversation changed since list version `since` (default: the last sync's, 0 at first), following
	 * pages of `page`; with `recent` (0-50) each with its newest messages. Remembers the new version;
	 * `hidden_seqs` also go to the hidden stream. Does not pull messages (`catchUp` does). Not retried.
	 */
	sync(since?: number, options?: {
		page?: number;
		recent?: number;
	}): Promise<ConvSummary[]>;
	/**
	 * A new device: the `first` most recently active conversations with their `recent` newest messages in one
	 * round trip ("fast" sync), then the rest of the list, most recent first. Not fed to `messages()`.
	 */
	restore(options?: {
		first?: number;
		recent?: number;
	}): Promise<ConvSummary[]>;
	/**
	 * One page of `conv` (at most `limit`, 1-500), ascending, messages in their current state: with `after`,
	 * the oldest above it; without, the newest (below `before` if given). Throws `FlareError` 416, 410
	 * (`detail.min_seq`), 403.
	 */
	pull(conv: string, options?: {
		after?: number;
		before?: number;
		limit?: number;
	}): Promise<Messages>;
	/** Every message of `conv` this user may read with seq > `after`, ascending, in pages of `page`. */
	history(conv: string, options?: {
		after?: number;
		page?: number;
	}): Promise<Message[]>;
	/** Syncs the list and pulls every conversation this client is behind on, into `messages()`. */
	catchUp(): Promise<ConvSummary[]>;
	/**
	 * This device already holds what it needs of `conv` up to `seq` (an app that shows the newest page of each
	 * conversation and loads older ones as the user scrolls): `messages()`, gap pulls and `catchUp()` go on from
	 * there instead of from seq 1. Never moves back; messages held beyond `seq` come out of `messages()`.
	 */
	startAfter(conv: string, seq: number): void;
	/** The seq up to which this client has seen every message of `conv` (0 if none). */
	localMaxSeq(conv: string): number;
	/** Incoming messages and events, forever: once each, in seq order per conversation. */
	messages(): AsyncIterable<Message>;
	/** The next item of `messages()`; rejects with `TimeoutError` after `timeoutMs`. */
	nextMessage(timeoutMs?: number): Promise<Message>;
	/** How many messages are queued for `nextMessage()`/`messages()`. */
	pendingMessages(): number;
	/** The next read or delivered receipt (a peer's, or this user's on another device). */
	nextReceipt(timeoutMs?: number): Promise<Receipt>;
	/** The next typing notice of another member (only the newest 1000 unread ones are kept). */
	nextTyping(timeoutMs?: number): Promise<TypingNotice>;
	/** The next presence change of a watched user. */
	nextPresence(timeoutMs?: number): Promise<PresenceState>;
	/** The next settings change made on another of this user's devices. */
	nextSettings(timeoutMs?: number): Promise<ConvSettings>;
	/** Messages this user deleted for itself on another device (pushed, or found by a sync). */
	nextHidden(timeoutMs?: number): Promise<Hidden>;
	private onData;
	private seen;
	/** Pulls `conv` from its first missing seq until the gap is closed; one pull loop per conversation. */
	private fill;
	private fillOnce;
}
export interface WebPushOptions {
	rest: RestClient;
	/** The `device` this browser connects as (`FlareClient`'s). */
	device: string;
	/** The server's VAPID public key, base64url (uncompressed P-256 point). */
	applicationServerKey: string;
	/** A registration to use; default: register `serviceWorkerUrl`. */
	registration?: ServiceWorkerRegistration;
	/** The service worker script to register when no `registration` is given (default `"/flare-sw.js"`). */
	serviceWorkerUrl?: string;
	appId?: string;
	locale?: string;
}
/**
 * Asks for notification permission if needed, subscribes (or reuses the subscription), and registers it as
 * `device`'s push target. Resolves with the push target; throws `Error` when permission is denied or the
 * browser has no Push API.
 */
export declare function subscribeWebPush(options: WebPushOptions): Promise<Json>;
/** Unsubscribes the browser and removes `device`'s push target (call it at logout). */
export declare function unsubscribeWebPush(options: {
	rest: RestClient;
	device: string;
	registration?: ServiceWorkerRegistration;
}): Promise<void>;
/** What the server's Web Push payload holds (`event.data.json()` in the service worker). */
export interface PushPayload {
	category: "message" | "mention" | "call" | "system" | "badge";
	title?: string;
	body?: string;
	/** The collapse id: a newer notification with the same tag replaces the shown one. */
	tag?: string;
	/** The user's total unread count. */
	badge?: number;
	/** A badge update or a withdrawal, nothing to show. */
	silent?: boolean;
	locale?: string;
	/** `conv`, `seq`, `msg_id`, `kind`, `sender`, … for the app. */
	data: Record<string, string>;
}
/** The service worker's global scope, as far as these helpers use it. */
export interface PushWorkerScope {
	registration: ServiceWorkerRegistration;
	navigator?: {
		setAppBadge?(n: number): Promise<void>;
		clearAppBadge?(): Promise<void>;
	};
	clients: {
		matchAll(options: {
			type: "window";
			includeUncontrolled: boolean;
		}): Promise<ReadonlyArray<{
			url: string;
			focus(): Promise<unknown>;
		}>>;
		openWindow(url: string): Promise<unknown>;
	};
}
/**
 * Shows a pushed notification (or, for a silent one, updates the app badge and closes the notifications of
 * its tag). Use it in the service worker: `self.addEventListener("push", (e) => e.waitUntil(showPush(self,
 * e.data.json())))`.
 */
export declare function showPush(scope: PushWorkerScope, push: PushPayload): Promise<void>;
/**
 * Handles a click on a notification: focuses a window of the app (or opens `urlFor(data)`). Use it in the
 * service worker: `self.addEventListener("notificationclick", (e) => e.waitUntil(openFromPush(self, e.notification,
 * (d) => "/app#" + d.conv)))`.
 */
export declare function openFromPush(scope: PushWorkerScope, notification: {
	data: unknown;
	close(): void;
}, urlFor: (data: Record<string, string>) => string): Promise<void>;
/** base64url (as VAPID keys are written) to bytes. */
export declare function base64UrlToBytes(text: string): Uint8Array<ArrayBuffer>;

export {
	Body$1 as Body,
};

export {};
