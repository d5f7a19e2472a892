// Bundles the CLI into a few ESM files under dist/bin/. Loading one file instead of ~60
// modules cut the start-up of `loom fetch` on a cache hit by tens of milliseconds, and a
// cache hit is mostly start-up. The library (dist/index.js) stays unbundled for importers.
import { build } from 'esbuild';

await build({
  entryPoints: { loom: 'src/cli/main.ts' },
  outdir: 'dist/bin',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Native addons load their .node binaries from their own package directories.
  external: ['better-sqlite3'],
  // CommonJS dependencies call require(); give the ESM bundle one.
  banner: {
    js: "import { createRequire as __loomCreateRequire } from 'node:module'; const require = __loomCreateRequire(import.meta.url);",
  },
  // Smaller to parse at every start; class names kept because errors report them.
  minify: true,
  keepNames: true,
  sourcemap: true,
  logLevel: 'warning',
});
