// Writes console_dist/manifest.json: a sha256 over the console's sources and lockfile, the one
// tests/test_console.py recomputes (gateway/http/console.py: source_hash) to fail CI when the
// shipped build is older than its sources. Keep the file selection identical on both sides.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(fileURLToPath(import.meta.url), "../..");
const out = resolve(root, "../gateway/http/console_dist");

// Files at the top of frontend/ that shape the build, and the folders whose every file does.
export const TOP = ["graphiql.html", "index.html", "package-lock.json", "package.json", "tsconfig.json",
  "vite.config.ts"];
export const DIRS = ["public", "scripts", "src"];

function walk(dir) {
  let found = [];
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return found;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found = found.concat(walk(path));
    else if (!/\.test\.tsx?$/.test(name)) found.push(path);
  }
  return found;
}

export function sourceHash() {
  const files = [...TOP.map((f) => join(root, f)), ...DIRS.flatMap((d) => walk(join(root, d)))]
    .map((p) => relative(root, p).split(sep).join("/"))
    .sort();
  const outer = createHash("sha256");
  for (const file of files) {
    const inner = createHash("sha256").update(readFileSync(join(root, file))).digest("hex");
    outer.update(`${file}\0${inner}\n`);
  }
  return { files, sha256: outer.digest("hex") };
}

const { files, sha256 } = sourceHash();
writeFileSync(join(out, "manifest.json"), JSON.stringify({ sources: sha256, files }, null, 2) + "\n");
console.log(`console_dist/manifest.json: sources ${sha256} (${files.length} files)`);
