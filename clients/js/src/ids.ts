/** Ids the client makes: conversation ids of direct chats, and idempotency keys. */

/**
 * The id of the direct conversation of users `a` and `b`, in either order: `d:` and the two ids in ASCII
 * order (`directConv("bob", "alice") === "d:alice:bob"`). There is no create step: the first send creates it.
 * Use the ids the server returned (normal form, docs/protocol.md §1).
 */
export function directConv(a: string, b: string): string {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

/** A random 32-hex-digit id (a UUID's 128 bits), for cmids and op ids. */
export function newId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
