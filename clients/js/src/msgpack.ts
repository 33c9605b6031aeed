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

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Encodes a value (null, boolean, number, bigint, string, Uint8Array, array, plain object) as MessagePack. */
export function packMsgpack(value: unknown): Uint8Array {
  const w = new Writer();
  w.value(value, 0);
  return w.finish();
}

/** Decodes one MessagePack value; throws `RangeError` on truncated or trailing input, `TypeError` on ext types. */
export function unpackMsgpack(data: Uint8Array | ArrayBuffer): unknown {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const r = new Reader(bytes);
  const out = r.value(0);
  if (r.pos !== bytes.length) throw new RangeError(`msgpack: ${bytes.length - r.pos} trailing bytes`);
  return out;
}

const MAX_DEPTH = 100; // nesting bound on both sides: a hostile or cyclic value cannot exhaust the stack

class Writer {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  private u8(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  private head(tag: number, write: (v: DataView, at: number) => void, size: number): void {
    this.ensure(1 + size);
    this.buf[this.pos] = tag;
    write(this.view, this.pos + 1);
    this.pos += 1 + size;
  }

  private bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  value(v: unknown, depth: number): void {
    if (depth > MAX_DEPTH) throw new RangeError("msgpack: nesting too deep");
    if (v === null || v === undefined) this.u8(0xc0);
    else if (v === false) this.u8(0xc2);
    else if (v === true) this.u8(0xc3);
    else if (typeof v === "number") this.number(v);
    else if (typeof v === "bigint") this.bigint(v);
    else if (typeof v === "string") this.string(v);
    else if (v instanceof Uint8Array) {
      this.binHead(v.length);
      this.bytes(v);
    } else if (Array.isArray(v)) {
      this.length(v.length, 0x90, 0xdc);
      for (const item of v) this.value(item, depth + 1);
    } else if (typeof v === "object") {
      const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
      this.length(entries.length, 0x80, 0xde);
      for (const [k, x] of entries) {
        this.string(k);
        this.value(x, depth + 1);
      }
    } else throw new TypeError(`msgpack: cannot encode a ${typeof v}`);
  }

  /** A fixed-size header when `fix` is given and n < 16, else the 16- or 32-bit form (`tag16`, `tag16 + 1`). */
  private length(n: number, fix: number, tag16: number): void {
    if (n < 16) this.u8(fix | n);
    else if (n < 0x10000) this.head(tag16, (v, at) => v.setUint16(at, n), 2);
    else this.head(tag16 + 1, (v, at) => v.setUint32(at, n), 4);
  }

  private binHead(n: number): void {
    if (n < 0x100) this.head(0xc4, (v, at) => v.setUint8(at, n), 1);
    else if (n < 0x10000) this.head(0xc5, (v, at) => v.setUint16(at, n), 2);
    else this.head(0xc6, (v, at) => v.setUint32(at, n), 4);
  }

  private number(n: number): void {
    if (!Number.isInteger(n) || !Number.isSafeInteger(n)) {
      this.head(0xcb, (v, at) => v.setFloat64(at, n), 8);
    } else if (n >= 0) {
      if (n < 0x80) this.u8(n);
      else if (n < 0x100) this.head(0xcc, (v, at) => v.setUint8(at, n), 1);
      else if (n < 0x10000) this.head(0xcd, (v, at) => v.setUint16(at, n), 2);
      else if (n < 0x100000000) this.head(0xce, (v, at) => v.setUint32(at, n), 4);
      else this.head(0xcf, (v, at) => v.setBigUint64(at, BigInt(n)), 8);
    } else if (n >= -32) this.u8(n & 0xff);
    else if (n >= -0x80) this.head(0xd0, (v, at) => v.setInt8(at, n), 1);
    else if (n >= -0x8000) this.head(0xd1, (v, at) => v.setInt16(at, n), 2);
    else if (n >= -0x80000000) this.head(0xd2, (v, at) => v.setInt32(at, n), 4);
    else this.head(0xd3, (v, at) => v.setBigInt64(at, BigInt(n)), 8);
  }

  private bigint(n: bigint): void {
    if (n >= 0n && n < 2n ** 64n) this.head(0xcf, (v, at) => v.setBigUint64(at, n), 8);
    else if (n < 0n && n >= -(2n ** 63n)) this.head(0xd3, (v, at) => v.setBigInt64(at, n), 8);
    else throw new RangeError("msgpack: integer out of 64-bit range");
  }

  private string(s: string): void {
    const b = utf8Encoder.encode(s);
    if (b.length < 32) this.u8(0xa0 | b.length);
    else if (b.length < 0x100) this.head(0xd9, (v, at) => v.setUint8(at, b.length), 1);
    else if (b.length < 0x10000) this.head(0xda, (v, at) => v.setUint16(at, b.length), 2);
    else this.head(0xdb, (v, at) => v.setUint32(at, b.length), 4);
    this.bytes(b);
  }
}

class Reader {
  pos = 0;
  private readonly view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private need(n: number): number {
    if (this.pos + n > this.buf.length) throw new RangeError("msgpack: truncated input");
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number {
    return this.view.getUint8(this.need(1));
  }
  private u16(): number {
    return this.view.getUint16(this.need(2));
  }
  private u32(): number {
    return this.view.getUint32(this.need(4));
  }

  private str(n: number): string {
    const at = this.need(n);
    return utf8Decoder.decode(this.buf.subarray(at, at + n));
  }

  private bin(n: number): Uint8Array {
    const at = this.need(n);
    return this.buf.slice(at, at + n);
  }

  private array(n: number, depth: number): unknown[] {
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth + 1));
    return out;
  }

  private map(n: number, depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== "string" && typeof key !== "number") throw new TypeError("msgpack: map key is not a string");
      Object.defineProperty(out, String(key), { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }

  value(depth: number): unknown {
    if (depth > MAX_DEPTH) throw new RangeError("msgpack: nesting too deep");
    const b = this.u8();
    if (b < 0x80) return b;
    if (b < 0x90) return this.map(b & 0x0f, depth);
    if (b < 0xa0) return this.array(b & 0x0f, depth);
    if (b < 0xc0) return this.str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(this.u8());
      case 0xc5:
        return this.bin(this.u16());
      case 0xc6:
        return this.bin(this.u32());
      case 0xca:
        return this.view.getFloat32(this.need(4));
      case 0xcb:
        return this.view.getFloat64(this.need(8));
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf:
        return Number(this.view.getBigUint64(this.need(8)));
      case 0xd0:
        return this.view.getInt8(this.need(1));
      case 0xd1:
        return this.view.getInt16(this.need(2));
      case 0xd2:
        return this.view.getInt32(this.need(4));
      case 0xd3:
        return Number(this.view.getBigInt64(this.need(8)));
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      default:
        throw new TypeError(`msgpack: unsupported type 0x${b.toString(16)} (extension types are not used by Flare)`);
    }
  }
}
