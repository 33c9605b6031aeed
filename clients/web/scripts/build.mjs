// Builds the web client into dist/: index.html, assets/app-<hash>.js and .css (content-hashed, so the server can
// cache them for a year), and sw.js (the Web Push service worker, fixed name). Deterministic: the same sources
// and locked tools give the same bytes, so a test compares the copy committed under
// src/flare_im/static/app/ with a fresh build. `--static` replaces that copy with dist/.
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const staticDir = join(root, "..", "..", "src", "flare_im", "static", "app");
const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const banner = `/* Flare web client ${version}. Built from clients/web/src by clients/web/scripts/build.mjs; do not edit. */`;
const common = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  charset: "utf8",
  legalComments: "none",
  minify: true,
  jsx: "automatic",
  jsxImportSource: "preact",
  banner: { js: banner, css: banner },
  logLevel: "warning",
};

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets"), { recursive: true });
const app = await build({
  ...common,
  entryPoints: { app: join(root, "src", "main.tsx") },
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  metafile: true,
});
await build({ ...common, entryPoints: [join(root, "src", "sw.ts")], outfile: join(dist, "sw.js") });

const outputs = Object.keys(app.metafile.outputs).map((p) => basename(p));
const js = outputs.find((n) => n.endsWith(".js"));
const css = outputs.find((n) => n.endsWith(".css"));
const html = readFileSync(join(root, "index.html"), "utf8").replace("{{js}}", `assets/${js}`).replace("{{css}}", `assets/${css}`);
writeFileSync(join(dist, "index.html"), html);

const gz = (name) => gzipSync(readFileSync(join(dist, "assets", name)), { level: 9 }).length;
console.log(`first load: ${js} ${gz(js)} B gzip -9 (JavaScript), ${css} ${gz(css)} B gzip -9 (CSS)`);

if (process.argv.includes("--static")) {
  rmSync(staticDir, { recursive: true, force: true });
  cpSync(dist, staticDir, { recursive: true });
}
