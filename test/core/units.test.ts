import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/core/errors.js';
import { formatBytes, parseDuration, parseSize } from '../../src/core/units.js';

describe('units', () => {
  it('reads sizes the way aria2 and curl users write them', () => {
    assert.equal(parseSize('8MiB'), 8 * 1024 * 1024);
    assert.equal(parseSize('64M'), 64 * 1024 * 1024);
    assert.equal(parseSize('1.5GB'), 1_500_000_000);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('10 mib'), 10 * 1024 * 1024);
    assert.throws(() => parseSize('lots'), UsageError);
    assert.throws(() => parseSize('-1M'), UsageError);
  });

  it('reads durations', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1500'), 1500);
    assert.throws(() => parseDuration('soon'), UsageError);
  });

  it('formats bytes for people', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1024 ** 3), '1.00 GiB');
  });
});
