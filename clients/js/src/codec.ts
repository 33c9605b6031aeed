/**
 * Frame encodings (docs/protocol.md §1, "Encodings"): JSON in text messages, MessagePack in binary ones. The
 * encoding is negotiated with the `flare.v1.<name>` subprotocol; whatever was negotiated, a text message is
 * decoded as JSON and a binary one as MessagePack, as the server does.
 */
import { packMsgpack, unpackMsgpack } from "./msgpack.js";
import type { ClientFrame, ServerFrame } from "./frames.js";

export type Encoding = "json" | "msgpack";

/** Turns frames into WebSocket messages and back. A custom codec (another MessagePack library) fits here. */
export interface Codec {
  readonly encoding: Encoding;
  /** A string is sent as a text message, bytes as a binary one. */
  encode(frame: ClientFrame): string | Uint8Array;
  /** Decodes one received message; throws on undecodable input. */
  decode(data: string | ArrayBuffer | Uint8Array): ServerFrame;
}

function decodeAny(data: string | ArrayBuffer | Uint8Array): ServerFrame {
  const value = typeof data === "string" ? JSON.parse(data) : unpackMsgpack(data);
  if (value === null || typeof value !== "object" || typeof (value as ServerFrame).type !== "string") {
    throw new TypeError("a frame must be an object with a string type");
  }
  return value as ServerFrame;
}

/** Drops `undefined` fields: JSON.stringify does, and the MessagePack writer does too. */
export const jsonCodec: Codec = {
  encoding: "json",
  encode: (frame) => JSON.stringify(frame),
  decode: decodeAny,
};

export const msgpackCodec: Codec = {
  encoding: "msgpack",
  encode: (frame) => packMsgpack(frame),
  decode: decodeAny,
};

/** The codec of an encoding name. */
export function codecFor(encoding: Encoding): Codec {
  return encoding === "msgpack" ? msgpackCodec : jsonCodec;
}
