// `loom pull` killed with SIGKILL mid-transfer and run again: the rerun's --json
// transferredBytes is what the Hub and its CDN sent it, read as the rerun exits, never more
// (resumed bytes are not counted as transferred), and the snapshot is exact. Reported once
// as 2 MiB more than the CDN's count: the test Hub counted a paced response's bytes only when
// its handler returned, after its last pacing sleep, so a client that exited as its last byte
// arrived had bytes the count did not have yet. The Hub now counts each slice as it sends it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collect, startLoom, tempDir, waitFor } from '../helpers/fixtures.js';
import { TestHub, commitHash, type TestHubFile } from '../support/test-hub.js';
import { TOKEN } from './fixtures.js';

const MiB = 1024 * 1024;
const COMMIT = commitHash('resume-accounting main');
const files: TestHubFile[] = [
  { path: 'model-00001-of-00002.safetensors', bytes: randomBytes(6 * MiB) },
  { path: 'model-00002-of-00002.safetensors', bytes: randomBytes(6 * MiB) },
  { path: 'tokenizer.model', bytes: randomBytes(MiB), lfs: false },
  { path: 'config.json', bytes: Buffer.from('{"model_type":"llama"}\n') },
];
const total = files.reduce((sum, f) => sum + f.bytes.length, 0);

/** The bytes the journals in `tmp` record as on disk. */
function journaledBytes(tmp: string): number {
  let bytes = 0;
  for (const name of existsSync(tmp) ? readdirSync(tmp) : []) {
    if (!name.endsWith('.journal')) continue;
    try {
      const journal = JSON.parse(readFileSync(join(tmp, name), 'utf8')) as { ranges: [number, number][] };
      for (const [start, end] of journal.ranges) bytes += end - start;
    } catch {
      // Being replaced.
    }
  }
  return bytes;
}

describe('the bytes a killed and rerun pull says it transferred', () => {
  let hub: TestHub;
  const root = tempDir('loom-resume-accounting-');
  const sent = (): number => hub.stats.cdnBytes + hub.stats.hubFileBytes;

  before(async () => {
    // Slow enough to kill mid-transfer, and each response's last pacing sleep long (256 ms).
    hub = await TestHub.start({
      repos: [{ id: 'acme/resume', commits: [{ sha: COMMIT, files }] }],
      tokens: [TOKEN],
      cdnBytesPerSecond: MiB,
    });
  });
  after(() => hub.close());

  it('the test Hub has counted every byte a client got by the time the client has it', async () => {
    hub.resetStats();
    const response = await fetch(`${hub.endpoint}/acme/resume/resolve/${COMMIT}/${files[0]!.path}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const body = Buffer.from(await response.arrayBuffer());
    assert.ok(body.equals(files[0]!.bytes));
    assert.equal(hub.stats.cdnBytes, body.length);
  });

  it('after kill -9, the rerun reports no more than the Hub sent it, and resumes', async () => {
    const env = {
      HF_ENDPOINT: hub.endpoint,
      HF_HOME: join(root, 'hf'),
      HF_HUB_CACHE: '',
      HF_TOKEN: TOKEN,
      HF_HUB_OFFLINE: '',
      LOOM_CACHE_DIR: join(root, 'node-cache'),
    };
    const args = ['pull', 'acme/resume', '--json', '--no-fsync', '--workers', '4'];
    hub.resetStats();
    const first = startLoom(args, env);
    const firstDone = collect(first);
    // Killed once its journals say 3 MiB are on disk (journals only grow: the rerun resumes at least that).
    const journaled = await waitFor(
      'the first pull to journal 3 MiB',
      () => {
        const bytes = journaledBytes(join(env.LOOM_CACHE_DIR, 'tmp'));
        return bytes >= 3 * MiB && bytes;
      },
      60_000,
    );
    first.kill('SIGKILL');
    assert.equal((await firstDone).signal, 'SIGKILL');
    const beforeKill = sent();

    hub.resetStats();
    const rerun = await collect(startLoom(args, env));
    // Read as the rerun exits, before any response handler still pacing has returned.
    const counted = sent();
    assert.equal(rerun.code, 0, rerun.stderr);
    const summary = JSON.parse(rerun.stdout) as { dir: string; transferredBytes: number };
    assert.ok(
      summary.transferredBytes <= counted,
      `the rerun says ${summary.transferredBytes} bytes, the Hub and CDN sent it ${counted}`,
    );
    assert.ok(counted <= total - journaled, `the rerun resumed: ${counted} of ${total} bytes sent again`);
    assert.ok(beforeKill + counted >= total, 'every byte was sent by one run or the other');
    for (const file of files) assert.ok(readFileSync(join(summary.dir, file.path)).equals(file.bytes), file.path);
  });
});
