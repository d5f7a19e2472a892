// The README's "Defaults" section is the documentation of every default: this keeps it in
// step with the table in src/core/defaults.ts, as errors.test.ts does for the error codes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULTS, defaultsTable, shownDefault } from '../../src/core/defaults.js';
import { parseDuration, parseSize } from '../../src/core/units.js';
import { FETCH_FLAGS } from '../../src/cli/fetch-flags.js';
import { REPO_ROOT } from '../helpers/fixtures.js';

describe('defaults', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = /^## Defaults\n([\s\S]*?)^## /m.exec(readme)?.[1] ?? '';
  const rows = [...section.matchAll(/^\| `([\w.]+)`\s*\| ([^|]*?)\s*\|/gm)].map((m) => [m[1]!, m[2]!] as const);

  it("the README's Defaults section lists exactly the table's defaults, with their values", () => {
    assert.ok(rows.length > 0, 'README has a "## Defaults" table');
    assert.deepEqual(rows, defaultsTable());
  });

  it('shows each value as a flag takes it back', () => {
    for (const [name, shown] of defaultsTable()) {
      const leaf = name.split('.').pop()!;
      const value = name.split('.').reduce<unknown>((at, key) => (at as Record<string, unknown>)[key], DEFAULTS);
      if (/Ms$/.test(leaf)) assert.equal(parseDuration(shown), value, name);
      else if (/(Size|Bytes|BodyLimit|bodyLimit)$/.test(leaf)) assert.equal(parseSize(shown), value, name);
    }
    assert.equal(shownDefault('minBytesPerSecond', 512 * 1024), '512KiB/s');
  });

  it("loom fetch's flag help prints the table's values", () => {
    const help = (flag: string) => FETCH_FLAGS.find((f) => f.flags.includes(flag))!;
    assert.match(
      help('--chunk-size').description,
      new RegExp(`default: ${shownDefault('chunkSize', DEFAULTS.chunkSize)}`),
    );
    assert.match(help('--stall-timeout').description, /default: 30s/);
    assert.match(help('--retries').description, new RegExp(`default: ${DEFAULTS.retry.attempts}\\)`));
    assert.equal(help('--workers').defaultValue, DEFAULTS.workers);
    assert.match(help('--listen').description, new RegExp(DEFAULTS.serveListen.replaceAll('.', '\\.')));
  });
});
