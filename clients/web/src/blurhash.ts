/**
 * BlurHash decoding (the algorithm of blurha.sh, MIT): the server sends a 4x3-component hash with each image,
 * drawn here into a tiny canvas as the placeholder shown until the thumbnail has loaded.
 */
const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
const cache = new Map<string, string | null>();

function decode83(text: string): number {
  let value = 0;
  for (const c of text) {
    const digit = DIGITS.indexOf(c);
    if (digit < 0) return NaN;
    value = value * 83 + digit;
  }
  return value;
}

function toLinear(v: number): number {
  const x = v / 255;
  return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
}

function toSrgb(v: number): number {
  const x = Math.max(0, Math.min(1, v));
  return x <= 0.0031308 ? Math.round(x * 12.92 * 255 + 0.5) : Math.round((1.055 * x ** (1 / 2.4) - 0.055) * 255 + 0.5);
}

const signPow = (v: number, e: number): number => Math.sign(v) * Math.abs(v) ** e;

/** RGBA pixels of `hash` at `width` x `height`, or null when it is not a valid hash. */
export function blurhashPixels(hash: string, width: number, height: number): Uint8ClampedArray<ArrayBuffer> | null {
  if (hash.length < 6) return null;
  const size = decode83(hash.charAt(0));
  const ny = Math.floor(size / 9) + 1;
  const nx = (size % 9) + 1;
  if (!Number.isFinite(size) || hash.length !== 4 + 2 * nx * ny) return null;
  const max = (decode83(hash.charAt(1)) + 1) / 166;
  const dc = decode83(hash.slice(2, 6));
  const colors: number[][] = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
  for (let i = 1; i < nx * ny; i++) {
    const v = decode83(hash.slice(4 + i * 2, 6 + i * 2));
    const q = [Math.floor(v / 361), Math.floor(v / 19) % 19, v % 19];
    colors.push(q.map((c) => signPow((c - 9) / 9, 2) * max));
  }
  if (colors.some((c) => c.some((v) => !Number.isFinite(v)))) return null;
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < ny; j++) {
        for (let i = 0; i < nx; i++) {
          const basis = Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
          const c = colors[i + j * nx] as number[];
          r += (c[0] as number) * basis;
          g += (c[1] as number) * basis;
          b += (c[2] as number) * basis;
        }
      }
      const at = 4 * (x + y * width);
      pixels[at] = toSrgb(r);
      pixels[at + 1] = toSrgb(g);
      pixels[at + 2] = toSrgb(b);
      pixels[at + 3] = 255;
    }
  }
  return pixels;
}

/** `hash` as a small PNG data URL (a `data:` image, which the page's policy allows), or null. */
export function blurhashUrl(hash: string): string | null {
  if (cache.has(hash)) return cache.get(hash) ?? null;
  const pixels = blurhashPixels(hash, 32, 24);
  let url: string | null = null;
  if (pixels) {
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = 24;
    canvas.getContext("2d")?.putImageData(new ImageData(pixels, 32, 24), 0, 0);
    url = canvas.toDataURL("image/png");
  }
  cache.set(hash, url);
  return url;
}
