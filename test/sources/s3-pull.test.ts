// fetchS3 and pullS3Prefix, the library glue over S3Source, against s3rver behind the
// signature-checking front: the file only appears once its checksum matched, and a prefix
// of several listing pages lands complete under the output directory.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BadResponseError, DigestMismatchError, UsageError } from '../../src/core/errors.js';
import { fetchS3, pullS3Prefix, s3KeyPath } from '../../src/cli/s3-fetch.js';
import { listS3Prefix, staticCredentials, type S3Options } from '../../src/sources/s3/index.js';
import { sha256Of, tempDir } from '../helpers/fixtures.js';
import { REGION, startS3Store, type S3TestStore } from '../support/s3-store.js';

const BUCKET = 'weights';
const dir = tempDir('loom-s3-pull-');
let store: S3TestStore;

before(async () => {
  store = await startS3Store([BUCKET]);
});
after(() => store.close());

function s3(): S3Options {
  return { endpoint: store.endpoint, region: REGION, credentials: staticCredentials(store.key) };
}

const base = { workers: 4, chunkSize: '256KiB', fsync: false, retryBaseDelay: 10 } as const;

describe('fetchS3 and pullS3Prefix', () => {
  it('fetchS3 writes the object and reports the full-object sha256 check it made', async () => {
    const object = randomBytes(1024 * 1024 + 3);
    await store.put(BUCKET, 'one/model.bin', object, { checksum: true });
    const out = join(dir, 'model.bin');
    const result = await fetchS3(`s3://${BUCKET}/one/model.bin`, out, { ...base, s3: s3() });
    assert.ok(readFileSync(out).equals(object));
    assert.deepEqual(result.s3Check, {
      check: 'sha256-full-object',
      expected: sha256Of(object),
      actual: sha256Of(object),
    });
  });

  it('fetchS3 keeps nothing when a composite checksum does not match the bytes', async () => {
    const partSize = 5 * 1024 * 1024;
    const object = randomBytes(partSize + 1000);
    await store.putMultipart(BUCKET, 'one/multi.bin', object, partSize);
    const out = join(dir, 'multi.bin');
    const ok = await fetchS3(`s3://${BUCKET}/one/multi.bin`, out, { ...base, s3: s3() });
    assert.equal(ok.s3Check.check, 'sha256-composite');
    assert.ok(readFileSync(out).equals(object));

    store.front.corrupt = { path: `/${BUCKET}/one/multi.bin`, offset: partSize + 10 };
    const bad = join(dir, 'multi-bad.bin');
    try {
      await assert.rejects(fetchS3(`s3://${BUCKET}/one/multi.bin`, bad, { ...base, s3: s3() }), DigestMismatchError);
    } finally {
      store.front.corrupt = undefined;
    }
    assert.equal(existsSync(bad), false);
    assert.equal(existsSync(`${bad}.part`), false);
  });

  it('pullS3Prefix lands every object of a multi-page listing under the directory, keeping sub-paths', async () => {
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 5; i++) objects.set(`pull/llama/shard-${i}.bin`, randomBytes(50_000 + i));
    objects.set('pull/llama/tokenizer/vocab.json', randomBytes(1000));
    for (const [key, bytes] of objects) await store.put(BUCKET, key, bytes);
    await store.put(BUCKET, 'pull/llama-other/x.bin', randomBytes(10));
    const out = join(dir, 'pulled');
    const mark = store.front.requests.length;
    const results = await pullS3Prefix(`s3://${BUCKET}/pull/llama/`, out, { ...base, s3: s3(), listPageSize: 2 });
    const listings = store.front.requests.slice(mark).filter((r) => r.path === `/${BUCKET}`);
    assert.equal(listings.length, 3, 'six keys two to a page');
    assert.equal(results.length, objects.size);
    for (const [key, bytes] of objects) {
      const path = join(out, key.slice('pull/llama/'.length));
      assert.equal(sha256Of(readFileSync(path)), sha256Of(bytes), key);
    }
    assert.equal(existsSync(join(out, 'x.bin')), false);
  });

  it('pullS3Prefix fetches objects side by side through one pool, each object exact', async () => {
    const objects = new Map<string, Buffer>();
    objects.set('pool/big.bin', randomBytes(1024 * 1024 + 7));
    for (let i = 0; i < 5; i++) objects.set(`pool/small-${i}.json`, randomBytes(20_000 + i));
    for (const [key, bytes] of objects) await store.put(BUCKET, key, bytes, { checksum: true });
    const out = join(dir, 'pool');
    store.front.peakObjectsInFlight = 0;
    store.front.bodyRate = 2 * 1024 * 1024;
    try {
      const results = await pullS3Prefix(`s3://${BUCKET}/pool/`, out, { ...base, workers: 3, s3: s3() });
      assert.deepEqual(
        results.map((r) => r.s3Check.check),
        results.map(() => 'sha256-full-object'),
      );
    } finally {
      store.front.bodyRate = undefined;
    }
    for (const [key, bytes] of objects) {
      assert.equal(sha256Of(readFileSync(join(out, key.slice('pool/'.length)))), sha256Of(bytes), key);
    }
    // Not one object at a time: the small ones came while the big one streamed.
    assert.ok(store.front.peakObjectsInFlight >= 2, `${store.front.peakObjectsInFlight} objects at once`);
  });

  it('pullS3Prefix of a prefix with no object leaves the directory it names, empty', async () => {
    const out = join(dir, 'nothing-here');
    const results = await pullS3Prefix(`s3://${BUCKET}/no/such/prefix/`, out, { ...base, s3: s3() });
    assert.deepEqual(results, []);
    assert.deepEqual(readdirSync(out), []);
  });

  it('keys that would climb out of the output directory are refused', () => {
    assert.throws(() => s3KeyPath('/data/out', 'p/', 'p/../../etc/passwd'), UsageError);
    assert.throws(() => s3KeyPath('/data/out', 'p/', 'p/'), UsageError);
    assert.equal(s3KeyPath('/data/out', 'p/', 'p/a/b.bin'), '/data/out/a/b.bin');
  });

  it(
    'a listing whose continuation tokens go round (A, B, A, …) fails at once instead of looping for ever',
    { timeout: 30_000 },
    async () => {
      // The store answers page A with token B and every other page with token A.
      store.front.listLie = (query) => {
        const next = query.get('continuation-token') === 'A' ? 'B' : 'A';
        return `<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>${next}</NextContinuationToken><Contents><Key>loop/x</Key><Size>1</Size></Contents></ListBucketResult>`;
      };
      const out = join(dir, 'loop');
      const mark = store.front.requests.length;
      try {
        await assert.rejects(pullS3Prefix(`s3://${BUCKET}/loop/`, out, { ...base, s3: s3() }), (err: unknown) => {
          assert.ok(err instanceof BadResponseError, String(err));
          assert.match(
            err.message,
            /listing of s3:\/\/weights\/loop\/ goes back to a continuation token it gave before/,
          );
          return true;
        });
      } finally {
        store.front.listLie = undefined;
      }
      const listings = store.front.requests.slice(mark).filter((r) => r.path === `/${BUCKET}`);
      assert.equal(listings.length, 3, 'no token, A, B; then A again is refused');
      assert.equal(existsSync(out), false, 'nothing written');
    },
  );

  it('a listing that pages for ever through new tokens stops at the page limit', { timeout: 30_000 }, async () => {
    let n = 0;
    store.front.listLie = () =>
      `<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t${++n}</NextContinuationToken></ListBucketResult>`;
    try {
      await assert.rejects(listS3Prefix(`s3://${BUCKET}/endless/`, { ...s3(), maxPages: 4 }), /goes on past 4 pages/);
    } finally {
      store.front.listLie = undefined;
    }
    assert.equal(n, 4);
  });
});
