// `loom fetch s3://bucket/key` and `loom pull s3://bucket/prefix/ --out DIR` as a user runs
// them: the built binary, configured by the AWS environment variables only, against s3rver
// behind the signature-checking front.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runLoom, sha256Of, tempDir } from '../helpers/fixtures.js';
import { REGION, startS3Store, type S3TestStore } from '../support/s3-store.js';

const BUCKET = 'cli-weights';
const dir = tempDir('loom-s3-cli-');
let store: S3TestStore;
let env: NodeJS.ProcessEnv;

before(async () => {
  store = await startS3Store([BUCKET]);
  env = {
    AWS_ENDPOINT_URL_S3: store.endpoint,
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: store.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: store.key.secretAccessKey,
    AWS_SESSION_TOKEN: '',
    AWS_PROFILE: '',
    AWS_CONFIG_FILE: join(dir, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'no-credentials'),
  };
});
after(() => store.close());

describe('loom fetch and loom pull with s3:// URIs', () => {
  it('loom fetch s3://bucket/key writes the object and says in --json which S3 checksum it matched', async () => {
    const object = randomBytes(1024 * 1024 + 7);
    await store.put(BUCKET, 'models/one.bin', object, { checksum: true });
    const out = join(dir, 'one.bin');
    const run = await runLoom(['fetch', `s3://${BUCKET}/models/one.bin`, '-o', out, '--json', '--workers', '4'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(sha256Of(readFileSync(out)), sha256Of(object));
    const summary = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.equal(summary.url, `s3://${BUCKET}/models/one.bin`);
    assert.equal(summary.bytes, object.length);
    assert.deepEqual(summary.s3Check, {
      check: 'sha256-full-object',
      expected: sha256Of(object),
      actual: sha256Of(object),
    });
  });

  it('loom fetch s3:// with a --sha256 other than the stored checksum fails and writes nothing', async () => {
    const object = randomBytes(300_000);
    await store.put(BUCKET, 'models/two.bin', object, { checksum: true });
    const out = join(dir, 'two.bin');
    const run = await runLoom(['fetch', `s3://${BUCKET}/models/two.bin`, '-o', out, '--sha256', 'a'.repeat(64)], env);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /not the one S3 stores/);
    assert.equal(existsSync(out), false);
  });

  it('loom pull s3://bucket/prefix/ --out DIR lands every object under DIR and prints DIR', async () => {
    const objects = new Map<string, Buffer>([
      ['pull/llama/a.bin', randomBytes(70_000)],
      ['pull/llama/tokenizer/vocab.json', randomBytes(1000)],
    ]);
    for (const [key, bytes] of objects) await store.put(BUCKET, key, bytes, { checksum: true });
    const out = join(dir, 'pulled');
    const run = await runLoom(['pull', `s3://${BUCKET}/pull/llama/`, '--out', out], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${out}\n`);
    for (const [key, bytes] of objects) {
      assert.equal(sha256Of(readFileSync(join(out, key.slice('pull/llama/'.length)))), sha256Of(bytes), key);
    }
  });

  it("loom pull s3://…: S3's refusals are one line each with their exit code, and nothing lands", async () => {
    await store.put(BUCKET, 'pull/denied/a.bin', randomBytes(10_000), { checksum: true });
    const out = join(dir, 'denied');
    const wrongKey = await runLoom(['pull', `s3://${BUCKET}/pull/denied/`, '--out', out], {
      ...env,
      AWS_SECRET_ACCESS_KEY: 'not-the-secret',
    });
    assert.equal(wrongKey.code, 2, wrongKey.stderr);
    assert.match(wrongKey.stderr, /LOOM_ERR_S3_ACCESS_DENIED|SignatureDoesNotMatch/);
    assert.equal(wrongKey.stderr.trim().split('\n').length, 1, wrongKey.stderr);
    const noBucket = await runLoom(['pull', 's3://no-such-bucket/models/', '--out', out], env);
    assert.equal(noBucket.code, 2, noBucket.stderr);
    assert.match(noBucket.stderr, /NoSuchBucket/);
    assert.equal(noBucket.stderr.trim().split('\n').length, 1, noBucket.stderr);
    assert.equal(existsSync(join(out, 'a.bin')), false);
  });

  it('loom pull s3://… without --out is a usage error that says to give --out', async () => {
    const run = await runLoom(['pull', `s3://${BUCKET}/pull/llama/`], env);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--out DIR/);
  });
});
