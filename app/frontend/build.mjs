// Bundle src/index.ts into dist/trace_canvas.js (ES module, the renderer is the default export) and record
// a hash of the sources beside it (dist/SOURCES.sha256), so a test can tell a stale bundle from a fresh one.
// The hash is sha256 over, for each file in HASHED (sorted by path): path, "\0", content, "\0".
import { build } from "esbuild"
import { createHash } from "node:crypto"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

const here = new URL(".", import.meta.url).pathname
const HASHED = ["build.mjs", "package.json", "package-lock.json", "tsconfig.json",
  ...readdirSync(join(here, "src")).filter((f) => f.endsWith(".ts")).map((f) => `src/${f}`)].sort()

export function sourcesHash() {
  const h = createHash("sha256")
  for (const rel of HASHED) {
    h.update(rel + "\0")
    h.update(readFileSync(join(here, rel)))
    h.update("\0")
  }
  return h.digest("hex")
}

await build({
  entryPoints: [join(here, "src/index.ts")],
  outfile: join(here, "dist/trace_canvas.js"),
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "none",
  logLevel: "warning",
})
writeFileSync(join(here, "dist/SOURCES.sha256"), sourcesHash() + "\n")
console.log("built dist/trace_canvas.js", sourcesHash())
