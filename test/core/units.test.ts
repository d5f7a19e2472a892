import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/core/errors.js';
import { formatBytes, formatRate, formatSeconds, parseDuration, parseSize, plural } from '../../src/core/units.js';

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

  it('reads a bare duration as seconds, as curl, wget and aria2c do; units as written', () => {
    assert.equal(parseDuration('5'), 5_000);
    assert.equal(parseDuration('0.5'), 500);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    // A JavaScript number (the library's options) stays milliseconds.
    assert.equal(parseDuration(1500), 1500);
    assert.throws(() => parseDuration('soon'), UsageError);
  });

  it("refuses a duration longer than Node's timers can wait (2^31-1 ms), which they would make 1 ms", () => {
    assert.equal(parseDuration('596h'), 596 * 3_600_000);
    assert.equal(parseDuration(2 ** 31 - 1), 2 ** 31 - 1);
    for (const long of ['600h', '2147484s', '2147483648ms'])
      assert.throws(
        () => parseDuration(long, '--stall-timeout'),
        (err) =>
          err instanceof UsageError &&
          err.message ===
            `--stall-timeout "${long}" must be at most 596h (about 24.8 days, the longest a timer can wait)`,
      );
    assert.throws(() => parseDuration(2 ** 31, 'stallTimeout'), /stallTimeout 2147483648 ms must be at most 596h/);
  });

  it('prints sizes and rates in one convention, decimal, never rounding a small rate to 0', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1000), '1.00 kB');
    assert.equal(formatBytes(1024 ** 3), '1.07 GB');
    assert.equal(formatBytes(8 * 1024 * 1024), '8.39 MB');
    assert.equal(formatBytes(999_999), '1.00 MB');
    assert.equal(formatRate(13_200), '13.2 kB/s');
    assert.equal(formatRate(411_395_871), '411 MB/s');
    assert.equal(formatRate(0.4), '0 B/s');
  });

  it('prints times and counts that read right', () => {
    assert.equal(formatSeconds(0.421), '0.42 s');
    assert.equal(formatSeconds(245), '4m 05s');
    assert.equal(plural(1, 'attempt'), '1 attempt');
    assert.equal(plural(2, 'attempt'), '2 attempts');
    assert.equal(plural(0, 'blob'), '0 blobs');
    assert.equal(plural(1, 'retry', 'retries'), '1 retry');
  });
});
