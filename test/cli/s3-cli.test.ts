// `loom fetch s3://…` and `loom pull s3://…/prefix/` from the command line, against s3rver
// behind a front that checks every SigV4 signature, with credentials from the environment
// (the AWS chain's first link) and the endpoint from AWS_ENDPOINT_URL_S3.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { REGION, startS3Store, type S3TestStore } from '../support/s3-store.js';
import { randomContent, runLoom, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const BUCKET = 'cli-bucket';
let store: S3TestStore;
const dir = tempDir();
before(async () => {
  store = await startS3Store([BUCKET]);
});
after(() => store.close());

function env(secret = store.key.secretAccessKey): NodeJS.ProcessEnv {
  return {
    AWS_ACCESS_KEY_ID: store.key.accessKeyId,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_REGION: REGION,
    AWS_ENDPOINT_URL_S3: store.endpoint,
    AWS_CONFIG_FILE: join(dir, 'none'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
  };
}

describe('loom with s3:// sources', () => {
  it('fetches an object, checked against its sha256 checksum, and reports the check in --json', async () => {
    const object = randomContent(3 * 1024 * 1024 + 17);
    await store.put(BUCKET, 'models/a.bin', object.bytes, { checksum: true });
    const out = join(dir, 'a.bin');
    const run = await runLoom(['fetch', `s3://${BUCKET}/models/a.bin`, '-o', out, '--json'], env());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(out), object.sha256);
    const summary = JSON.parse(run.stdout) as { sha256: string; bytes: number };
    assert.equal(summary.sha256, object.sha256);
    assert.equal(summary.bytes, object.bytes.length);
  });

  it('pulls a prefix into a folder', async () => {
    const one = randomContent(1000);
    const two = randomContent(2000);
    await store.put(BUCKET, 'prefix/one.bin', one.bytes);
    await store.put(BUCKET, 'prefix/sub/two.bin', two.bytes);
    const out = join(dir, 'pulled');
    const run = await runLoom(['pull', `s3://${BUCKET}/prefix/`, '--out', out], env());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(await sha256OfFile(join(out, 'one.bin')), one.sha256);
    assert.equal(await sha256OfFile(join(out, 'sub', 'two.bin')), two.sha256);
  });

  it('wrong credentials fail with one clear line and the S3 error, nothing written', async () => {
    const out = join(dir, 'denied.bin');
    const run = await runLoom(['fetch', `s3://${BUCKET}/models/a.bin`, '-o', out], env('wrong-secret'));
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /S3 refused .*\((AccessDenied|SignatureDoesNotMatch)\); check the AWS credentials/);
    assert.equal(existsSync(out), false);
    assert.doesNotMatch(run.stderr, /\n {4}at /, 'no stack trace');
  });
});
