// Bundles the CLI's own code into one CommonJS file, dist/bin/loom.cjs; the packages it
// uses stay in node_modules and load when a command needs them. A cache hit is mostly
// process start-up, and this is the cheapest form to start: CommonJS skips the ES module
// loader's per-module resolve and link work and the facades it builds for every built-in
// module. Measured on a hit: ESM chunks 1.58x `node -e 0`, one CommonJS file 1.42x. The
// library (dist/index.js) stays unbundled ESM for importers.
//
// Then V8's code cache for the bundle, loom.cjs.v8cache, which bin/loom.cjs compiles it from
// (~10 ms less per command; Node 20 has no module.enableCompileCache). The bundle's last line
// names the build (a hash of its text) and the cache starts with that line, so a cache never
// serves another bundle; V8 itself refuses one from another Node or other flags.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { Buffer } from 'node:buffer';
import Module from 'node:module';
import { join } from 'node:path';
import vm from 'node:vm';
import { build } from 'esbuild';

const outfile = 'dist/bin/loom.cjs';

await build({
  entryPoints: ['src/cli/main.ts'],
  outfile,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // Dependencies load from node_modules, only on the paths that use them.
  packages: 'external',
  // import() of a package becomes require() (every package used is CommonJS): a bundle
  // compiled from the code cache has no dynamic import callback on Node 20.
  supported: { 'dynamic-import': false },
  // The sources are ESM; in CommonJS their import.meta.url is this file's URL.
  banner: { js: "const __loomModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__loomModuleUrl' },
  // Smaller to parse at every start; class names kept because errors report them.
  minify: true,
  keepNames: true,
  sourcemap: true,
  logLevel: 'warning',
});

const text = readFileSync(outfile, 'utf8');
const idLine = `// loom-build ${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
const source = `${text.replace(/\n?$/, '\n')}${idLine}\n`;
writeFileSync(outfile, source);
// The functions the bundle's top level runs are compiled too: run it (it only defines things).
const script = new vm.Script(Module.wrap(source), { filename: outfile });
const exports = {};
script.runInThisContext()(
  exports,
  Module.createRequire(join(import.meta.dirname, '..', outfile)),
  { exports },
  outfile,
  'dist/bin',
);
writeFileSync(`${outfile}.v8cache`, Buffer.concat([Buffer.from(`${idLine}\n`, 'latin1'), script.createCachedData()]));
