#!/usr/bin/env node
// The `loom` command: runs the bundled CLI (npm run build makes dist/bin/loom.cjs). A cache
// hit is mostly process start-up, and compiling the 270 kB bundle is a part of it that V8
// can skip: the build writes V8's code cache for the bundle beside it (loom.cjs.v8cache,
// tagged with the bundle's build id), and the bundle is compiled from it when it belongs to
// this very bundle and V8 accepts it (same Node, same flags). Otherwise, or on any error on
// that path, the bundle loads as any CommonJS file. (Node 22's module.enableCompileCache
// does this for every module; Node 20 has no such thing.)
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const bundle = path.join(__dirname, '..', 'dist', 'bin', 'loom.cjs');

/** The bundle's exports, compiled from the code cache; undefined when it cannot be used. */
function fromCodeCache() {
  let cached;
  try {
    cached = fs.readFileSync(`${bundle}.v8cache`);
  } catch {
    return undefined;
  }
  const vm = require('node:vm');
  const Module = require('node:module');
  const source = fs.readFileSync(bundle, 'utf8');
  // The build's last line names the build; the cache file starts with the same line.
  const id = /\n(\/\/ loom-build [0-9a-f]+)\n?$/.exec(source);
  const newline = cached.indexOf(10);
  if (!id || newline < 0 || cached.toString('latin1', 0, newline) !== id[1]) return undefined;
  // The bundle has no import() (the build turns them into require()), so it needs no callback for one.
  const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData: cached.subarray(newline + 1) });
  // A cache V8 rejects (another Node or other flags) costs nothing more: the script is compiled.
  const mod = new Module(bundle, module);
  mod.filename = bundle;
  mod.paths = Module._nodeModulePaths(path.dirname(bundle));
  mod.loaded = true;
  const localRequire = Module.createRequire(bundle);
  script.runInThisContext()(mod.exports, localRequire, mod, bundle, path.dirname(bundle));
  return mod.exports;
}

let loaded;
try {
  loaded = fromCodeCache();
} catch {
  loaded = undefined;
}
const { main } = loaded || require(bundle);

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`loom: internal error: ${err && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
