#!/usr/bin/env node
// The `loom` command: runs the bundled CLI (npm run build makes dist/bin/loom.cjs).
'use strict';
const { main } = require('../dist/bin/loom.cjs');

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`loom: internal error: ${err && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  },
);
