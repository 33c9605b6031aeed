/**
 * One error tree (docs/protocol.md §5): the server's error codes, and the three things a call can throw.
 *
 * - {@link FlareError}: the server answered with an error (`code`, `message`, `retryable`, `detail`).
 * - {@link Disconnected}: the connection closed before the reply came; the request may or may not have been
 *   processed (sends and operations retry it themselves with the same idempotency key).
 * - {@link TimeoutError}: no reply (or no connection, while reconnecting) within the time allowed.
 */

/** Error codes of the protocol: HTTP statuses, the same on the WebSocket and over REST. */
export const ErrorCode = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  GONE: 410,
  TOO_LARGE: 413,
  OUT_OF_RANGE: 416,
  INVALID: 422,
  RATE_LIMITED: 429,
  BLOCKED: 451,
  INTERNAL: 500,
  UNAVAILABLE: 503,
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes the server sends (docs/protocol.md §5). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  TOO_BIG: 1009,
  TRY_AGAIN_LATER: 1013,
  AUTH_FAILED: 4001,
  AUTH_TIMEOUT: 4002,
  PROTOCOL_VIOLATION: 4003,
  REPLACED: 4004,
  SLOW_CONSUMER: 4008,
  RATE_LIMITED: 4029,
  RESTART: 4100,
} as const;

/** The server answered a request with an error. Retry only when `retryable` is true. */
export class FlareError extends Error {
  override name = "FlareError";
  constructor(
    /** The protocol's error code (an HTTP status, {@link ErrorCode}). */
    readonly code: number,
    message: string,
    /** Whether the same request may succeed later (429, 500, 503). */
    readonly retryable = false,
    /** Machine-readable context of some errors: 409 on an edit (`version`, `body`, `edited_at`), 410. */
    readonly detail: Record<string, unknown> | null = null,
  ) {
    super(message);
  }
}

/** The connection closed before the reply came (or there was none). The request may have been processed. */
export class Disconnected extends Error {
  override name = "Disconnected";
}

/** No reply, connection or item within the time allowed. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/** The WebSocket could not be opened (refused, DNS, TLS, HTTP error on the upgrade). */
export class ConnectError extends Error {
  override name = "ConnectError";
}
