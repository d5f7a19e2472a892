// S3Source, listing and checksums against a real S3-compatible store (s3rver) behind a
// front that recomputes every request's SigV4 signature with an independent signer, driven
// through the engine's own download: exact bytes, refused credentials, paginated listings,
// full-object and composite sha256 checks, presigned URLs and credentials that change mid-download.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DigestMismatchError, NotFoundError, S3AccessDeniedError } from '../../src/core/errors.js';
import { downloadToPart } from '../../src/fetch/download.js';
import { resolveFetchOptions, type FetchOptions } from '../../src/fetch/options.js';
import {
  listS3Prefix,
  s3ObjectChecksum,
  s3SourceFor,
  staticCredentials,
  verifyS3Download,
  type S3Options,
} from '../../src/sources/s3/index.js';
import { sha256Of, tempDir } from '../helpers/fixtures.js';
import { REGION, startS3Store, type S3TestStore } from '../support/s3-store.js';

const BUCKET = 'models';
const dir = tempDir('loom-s3-');
let store: S3TestStore;
let part = 0;

before(async () => {
  store = await startS3Store([BUCKET]);
});
after(() => store.close());

function options(extra: S3Options = {}): S3Options {
  return { endpoint: store.endpoint, region: REGION, credentials: staticCredentials(store.key), ...extra };
}

/** Downloads an object through the engine into a fresh part file. */
async function download(uri: string, s3: S3Options, fetch: FetchOptions = {}) {
  const partPath = join(dir, `object-${part++}.part`);
  const source = s3SourceFor(uri, s3);
  try {
    const result = await downloadToPart(
      source,
      partPath,
      resolveFetchOptions({ workers: 4, chunkSize: '256KiB', retryBaseDelay: 10, fsync: false, ...fetch }),
    );
    return { result, partPath, source };
  } finally {
    source.close();
  }
}

function requestsSince(mark: number) {
  return store.front.requests.slice(mark);
}

describe('S3Source against s3rver behind a signature-checking front', () => {
  it('fetches an object exactly, every request signed with SigV4 and accepted by an independent signer', async () => {
    const object = randomBytes(3 * 1024 * 1024 + 12_345);
    await store.put(BUCKET, 'llama/model-00001.safetensors', object, { checksum: true });
    const uri = `s3://${BUCKET}/llama/model-00001.safetensors`;
    const checksum = await s3ObjectChecksum(uri, options());
    assert.equal(checksum.type, 'FULL_OBJECT');
    assert.equal(checksum.sha256Hex, sha256Of(object));
    assert.equal(checksum.size, object.length);

    const mark = store.front.requests.length;
    const { result, partPath } = await download(uri, options(), { sha256: checksum.sha256Hex });
    assert.equal(result.sha256, sha256Of(object));
    assert.ok(readFileSync(partPath).equals(object));
    const gets = requestsSince(mark);
    assert.ok(gets.length > 4, `the object came in several ranged requests (${gets.length})`);
    for (const r of gets) {
      assert.equal(r.auth, 'header');
      assert.equal(r.status, 206, `${r.method} ${r.range} answered ${r.status} ${r.code ?? ''}`);
    }
    assert.deepEqual(await verifyS3Download(uri, partPath, checksum, result.sha256, options()), {
      check: 'sha256-full-object',
      expected: sha256Of(object),
      actual: sha256Of(object),
    });
  });

  it('keys with spaces, plus signs and unicode are addressed and signed the way S3 canonicalizes them', async () => {
    const object = randomBytes(300_000);
    const key = 'odd keys/a b+c (1)/é*.bin';
    await store.put(BUCKET, key, object);
    const { result } = await download(`s3://${BUCKET}/${key}`, options(), { computeSha256: true });
    assert.equal(result.sha256, sha256Of(object));
  });

  it('a wrong secret key is a clear S3AccessDeniedError naming SignatureDoesNotMatch, not a retry loop', async () => {
    await store.put(BUCKET, 'secret.bin', randomBytes(10_000));
    const wrong = staticCredentials({ accessKeyId: store.key.accessKeyId, secretAccessKey: 'not-the-secret' });
    const mark = store.front.requests.length;
    await assert.rejects(download(`s3://${BUCKET}/secret.bin`, options({ credentials: wrong })), (err: unknown) => {
      assert.ok(err instanceof S3AccessDeniedError, String(err));
      assert.equal(err.code, 'LOOM_ERR_S3_ACCESS_DENIED');
      assert.equal(err.exitCode, 2);
      assert.match(err.message, /SignatureDoesNotMatch/);
      assert.match(err.message, /AWS credentials/);
      return true;
    });
    // One request and one retry with re-read credentials, then the error: no backoff loop.
    assert.deepEqual(
      requestsSince(mark).map((r) => [r.status, r.code]),
      [
        [403, 'SignatureDoesNotMatch'],
        [403, 'SignatureDoesNotMatch'],
      ],
    );
  });

  it('an unknown access key is refused as InvalidAccessKeyId, also when asking for the checksum', async () => {
    const unknown = staticCredentials({ accessKeyId: 'AKIANOBODY', secretAccessKey: 'x' });
    await assert.rejects(download(`s3://${BUCKET}/secret.bin`, options({ credentials: unknown })), (err: unknown) => {
      assert.ok(err instanceof S3AccessDeniedError);
      assert.match(err.message, /InvalidAccessKeyId/);
      return true;
    });
    await assert.rejects(
      s3ObjectChecksum(`s3://${BUCKET}/secret.bin`, options({ credentials: unknown })),
      S3AccessDeniedError,
    );
  });

  it('a request signed for the wrong region says which region the bucket is in', async () => {
    await assert.rejects(download(`s3://${BUCKET}/secret.bin`, options({ region: 'us-east-1' })), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, /is in region eu-test-1, not us-east-1/);
      assert.match(err.message, /AWS_REGION=eu-test-1/);
      return true;
    });
  });

  it('lists a prefix of more than one page completely and in key order', async () => {
    const keys = Array.from({ length: 7 }, (_, i) => `listing/shard-${String(i).padStart(2, '0')}.bin`);
    for (const [i, key] of keys.entries()) await store.put(BUCKET, key, randomBytes(100 + i));
    await store.put(BUCKET, 'listing-other/x.bin', randomBytes(5));
    await store.put(BUCKET, 'other/listing/y.bin', randomBytes(5));
    const mark = store.front.requests.length;
    const entries = await listS3Prefix(`s3://${BUCKET}/listing/`, { ...options(), pageSize: 2 });
    assert.deepEqual(
      entries.map((e) => [e.key, e.size]),
      keys.map((key, i) => [key, 100 + i]),
    );
    const pages = requestsSince(mark);
    assert.equal(pages.length, 4, 'seven keys two to a page take four pages');
    assert.ok(pages.every((r) => r.status === 200 && r.auth === 'header'));
  });

  it('bytes that do not match the full-object sha256 the store vouches for are refused and nothing is kept', async () => {
    const object = randomBytes(1024 * 1024 + 7);
    await store.put(BUCKET, 'corrupt.bin', object, { checksum: true });
    const uri = `s3://${BUCKET}/corrupt.bin`;
    const checksum = await s3ObjectChecksum(uri, options());
    store.front.corrupt = { path: `/${BUCKET}/corrupt.bin`, offset: 700_000 };
    try {
      const partPath = join(dir, `object-${part}.part`);
      await assert.rejects(download(uri, options(), { sha256: checksum.sha256Hex }), DigestMismatchError);
      assert.equal(existsSync(partPath), false);
    } finally {
      store.front.corrupt = undefined;
    }
  });

  it('a composite (multipart) sha256 is verified part by part, and a corrupt part is caught', async () => {
    const partSize = 5 * 1024 * 1024;
    const object = randomBytes(2 * partSize + 123_456);
    await store.putMultipart(BUCKET, 'multipart.bin', object, partSize);
    const uri = `s3://${BUCKET}/multipart.bin`;
    const checksum = await s3ObjectChecksum(uri, options());
    assert.equal(checksum.type, 'COMPOSITE');
    assert.equal(checksum.composite?.parts, 3);
    assert.equal(checksum.sha256Hex, undefined, 'a composite value is not the sha256 of the object');

    const { result, partPath } = await download(uri, options(), { computeSha256: true, chunkSize: '1MiB' });
    assert.equal(result.sha256, sha256Of(object));
    const check = await verifyS3Download(uri, partPath, checksum, result.sha256, options());
    assert.equal(check.check, 'sha256-composite');
    assert.equal(check.parts, 3);
    assert.equal(check.actual, checksum.composite?.sha256Hex);

    const bytes = readFileSync(partPath);
    bytes[partSize + 10] ^= 0x01;
    writeFileSync(partPath, bytes);
    await assert.rejects(verifyS3Download(uri, partPath, checksum, undefined, options()), DigestMismatchError);
  });

  it('an empty object downloads as an empty file', async () => {
    await store.put(BUCKET, 'empty.bin', Buffer.alloc(0));
    const { result, partPath } = await download(`s3://${BUCKET}/empty.bin`, options(), { computeSha256: true });
    assert.equal(result.size, 0);
    assert.equal(result.sha256, sha256Of(Buffer.alloc(0)));
    assert.equal(readFileSync(partPath).length, 0);
  });

  it('a missing key or bucket is a NotFoundError naming NoSuchKey or NoSuchBucket', async () => {
    await assert.rejects(download(`s3://${BUCKET}/no/such/key.bin`, options()), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.match(err.message, /NoSuchKey/);
      return true;
    });
    await assert.rejects(download('s3://no-such-bucket/key.bin', options()), /NoSuchBucket/);
  });

  it('an object replaced mid-download is noticed by its ETag and fetched again whole, never mixed', async () => {
    const before = randomBytes(1024 * 1024);
    const replacement = randomBytes(1024 * 1024);
    await store.put(BUCKET, 'replaced.bin', before);
    let gets = 0;
    // The third range request finds the object replaced (the front waits for the PUT).
    store.front.onRequest = async (r) => {
      if (r.method === 'GET' && r.path === `/${BUCKET}/replaced.bin` && ++gets === 3) {
        await store.put(BUCKET, 'replaced.bin', replacement);
      }
    };
    try {
      const { result, partPath } = await download(`s3://${BUCKET}/replaced.bin`, options(), {
        workers: 2,
        maxRequestSize: '128KiB',
        computeSha256: true,
      });
      assert.equal(result.stats.restarts, 1);
      assert.equal(result.sha256, sha256Of(replacement));
      assert.ok(readFileSync(partPath).equals(replacement));
    } finally {
      store.front.onRequest = undefined;
    }
  });

  it('session credentials are signed with their token, and a missing token is refused', async () => {
    const session = {
      accessKeyId: 'ASIASESSION',
      secretAccessKey: randomBytes(8).toString('hex'),
      sessionToken: 'tok/en+1=',
    };
    store.front.addKey(session);
    const object = randomBytes(200_000);
    await store.put(BUCKET, 'session.bin', object);
    const uri = `s3://${BUCKET}/session.bin`;
    const { result } = await download(uri, options({ credentials: staticCredentials(session) }), {
      computeSha256: true,
    });
    assert.equal(result.sha256, sha256Of(object));
    const presigned = await download(
      uri,
      options({ credentials: staticCredentials(session), presignExpiresSeconds: 60 }),
      {
        computeSha256: true,
      },
    );
    assert.equal(presigned.result.sha256, sha256Of(object));
    const tokenless = staticCredentials({ accessKeyId: session.accessKeyId, secretAccessKey: session.secretAccessKey });
    await assert.rejects(download(uri, options({ credentials: tokenless })), /InvalidToken/);
  });

  it('with no credentials anywhere in the AWS chain the error says where credentials come from', async () => {
    const saved = { ...process.env };
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) {
      delete process.env[name];
    }
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, 'none');
    process.env.AWS_CONFIG_FILE = join(dir, 'none');
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    try {
      await assert.rejects(
        s3ObjectChecksum(`s3://${BUCKET}/session.bin`, options({ credentials: undefined })),
        (err: unknown) => {
          assert.ok(err instanceof S3AccessDeniedError);
          assert.match(err.message, /no AWS credentials found/);
          assert.match(err.message, /AWS_PROFILE/);
          return true;
        },
      );
    } finally {
      process.env = saved;
    }
  });

  it('revalidation asks S3 with If-None-Match: fresh while the ETag holds, changed once replaced', async () => {
    await store.put(BUCKET, 'revalidate.bin', randomBytes(1000));
    const source = s3SourceFor(`s3://${BUCKET}/revalidate.bin`, options());
    try {
      const signal = new AbortController().signal;
      const probe = await source.probe([0, 1000], signal);
      probe.body.stream.resume();
      assert.equal(await source.revalidate(probe.validator, signal, 5_000), 'fresh');
      await store.put(BUCKET, 'revalidate.bin', randomBytes(1000));
      assert.equal(await source.revalidate(probe.validator, signal, 5_000), 'changed');
    } finally {
      source.close();
    }
  });

  it('presigned URLs that expire mid-download are made anew and the download carries on without starting over', async () => {
    const object = randomBytes(2 * 1024 * 1024);
    await store.put(BUCKET, 'presigned.bin', object);
    store.front.bodyRate = 256 * 1024;
    const mark = store.front.requests.length;
    try {
      const { result, source } = await download(`s3://${BUCKET}/presigned.bin`, options({ presignExpiresSeconds: 2 }), {
        workers: 2,
        maxRequestSize: '256KiB',
        computeSha256: true,
      });
      assert.equal(result.sha256, sha256Of(object));
      assert.equal(result.stats.restarts, 0);
      assert.equal(result.stats.transferredBytes, object.length, 'no byte was fetched twice');
      const seen = requestsSince(mark);
      assert.ok(seen.every((r) => r.auth === 'query'));
      const expired = seen.filter((r) => r.status === 403);
      assert.ok(expired.length >= 1, 'at least one URL expired during the download');
      assert.ok(expired.every((r) => r.code === 'AccessDenied'));
      assert.ok(source.requester.resigned >= 1);
    } finally {
      store.front.bodyRate = undefined;
    }
  });

  it('credentials rotated in the shared credentials file mid-download are picked up by the AWS chain', async () => {
    const object = randomBytes(2 * 1024 * 1024);
    await store.put(BUCKET, 'rotated.bin', object);
    const file = join(dir, 'credentials');
    const writeKey = (id: string, secret: string): void =>
      writeFileSync(file, `[default]\naws_access_key_id = ${id}\naws_secret_access_key = ${secret}\n`);
    const first = { accessKeyId: 'AKIAROTATE1', secretAccessKey: randomBytes(8).toString('hex') };
    const second = { accessKeyId: 'AKIAROTATE2', secretAccessKey: randomBytes(8).toString('hex') };
    store.front.addKey(first);
    writeKey(first.accessKeyId, first.secretAccessKey);
    const saved = { ...process.env };
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'])
      delete process.env[name];
    process.env.AWS_SHARED_CREDENTIALS_FILE = file;
    process.env.AWS_CONFIG_FILE = join(dir, 'no-config');
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    store.front.bodyRate = 512 * 1024;
    const mark = store.front.requests.length;
    let rotated = false;
    try {
      const { result } = await download(`s3://${BUCKET}/rotated.bin`, options({ credentials: undefined }), {
        workers: 2,
        maxRequestSize: '256KiB',
        computeSha256: true,
        onProgress: (p) => {
          if (!rotated && p.doneBytes > object.length / 3) {
            rotated = true;
            store.front.addKey(second);
            writeKey(second.accessKeyId, second.secretAccessKey);
            store.front.revokeKey(first.accessKeyId);
          }
        },
      });
      assert.ok(rotated);
      assert.equal(result.sha256, sha256Of(object));
      assert.equal(result.stats.restarts, 0);
      const seen = requestsSince(mark);
      const served = (id: string): number => seen.filter((r) => r.accessKeyId === id && r.status === 206).length;
      assert.ok(served(first.accessKeyId) >= 1, 'ranges before the rotation used the first key');
      assert.ok(served(second.accessKeyId) >= 1, 'ranges after the rotation used the second key');
    } finally {
      process.env = saved;
      store.front.bodyRate = undefined;
    }
  });
});
