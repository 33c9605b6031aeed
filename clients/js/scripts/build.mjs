// Builds dist/flare.js (one ES module, no dependencies) and dist/flare.d.ts (one declaration file).
// Deterministic: the same sources and locked tool versions give the same bytes, so a test can compare the
// copy committed under src/flare_im/static/js/ with a fresh build. `--static` also writes that copy.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { generateDtsBundle } from "dts-bundle-generator";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const staticDir = join(root, "..", "..", "src", "flare_im", "static", "js");
const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const banner = `// Flare JavaScript SDK ${version}. Built from clients/js/src by clients/js/scripts/build.mjs; do not edit.`;

mkdirSync(dist, { recursive: true });
await build({
  entryPoints: [join(root, "src", "index.ts")],
  outfile: join(dist, "flare.js"),
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  charset: "utf8",
  legalComments: "none",
  banner: { js: banner },
  logLevel: "warning",
});

const [dts] = generateDtsBundle([{ filePath: join(root, "src", "index.ts"), output: { noBanner: true } }], {
  preferredConfigPath: join(root, "tsconfig.json"),
});
writeFileSync(join(dist, "flare.d.ts"), `${banner}\n${dts}`);

if (process.argv.includes("--static")) {
  mkdirSync(staticDir, { recursive: true });
  for (const name of ["flare.js", "flare.d.ts"]) copyFileSync(join(dist, name), join(staticDir, name));
}
