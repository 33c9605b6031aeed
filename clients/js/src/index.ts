/**
 * Flare's JavaScript SDK: {@link FlareClient} (one device's WebSocket connection), {@link RestClient} (the
 * REST API), {@link ConversationView} (a local copy of conversations, no I/O), the {@link Outbox}, and Web
 * Push helpers. The reference, with an example per call, is docs/sdk-js.md; the contract is docs/protocol.md.
 */
export { VERSION, PROTOCOL } from "./version.js";
export { ErrorCode, CloseCode, FlareError, Disconnected, TimeoutError, ConnectError } from "./errors.js";
export type { ErrorCodeValue } from "./errors.js";
export type {
  Ack,
  AuthOk,
  Body,
  ClientFrame,
  ConvSettings,
  ConvSummary,
  Convs,
  ErrorFrame,
  Hidden,
  Kick,
  Message,
  Messages,
  PresenceState,
  ReadersList,
  Receipt,
  ServerFrame,
  TypingNotice,
} from "./frames.js";
export { toMessage, withDefaults } from "./frames.js";
export { type Codec, type Encoding, jsonCodec, msgpackCodec, codecFor } from "./codec.js";
export { packMsgpack, unpackMsgpack } from "./msgpack.js";
export { directConv, newId } from "./ids.js";
export { Ordering, ConvOrder, type PageResult } from "./ordering.js";
export { ConversationView } from "./view.js";
export { Stream, type Listener } from "./stream.js";
export {
  Outbox,
  MemoryOutboxStore,
  IndexedDbOutboxStore,
  defaultOutboxStore,
  type OutboxEntry,
  type OutboxEvent,
  type OutboxStore,
  type OutboxTransport,
} from "./outbox.js";
export {
  RestClient,
  type Json,
  type RequestOptions,
  type RestOptions,
  type TokenProvider,
  type TokenState,
  type Tokens,
} from "./rest.js";
export {
  FlareClient,
  type ClientEvents,
  type FlareClientOptions,
  type OperateOptions,
  type SendOptions,
  type SettingsChange,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export {
  subscribeWebPush,
  unsubscribeWebPush,
  showPush,
  openFromPush,
  base64UrlToBytes,
  type PushPayload,
  type PushWorkerScope,
  type WebPushOptions,
} from "./push.js";
