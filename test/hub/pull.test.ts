// loom pull as a library (pullRepo) against the test Hub: the files exact, the HF cache
// layout entry by entry, one commit per pull, nothing twice, corruption caught, expiring
// CDN URLs survived, the token kept off the CDN, and the Hub's errors typed.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blobPath, cacheLayout } from '../../src/cache/cache-root.js';
import {
  DigestMismatchError,
  HubEntryNotFoundError,
  HubGatedRepoError,
  HubRateLimitedError,
  HubRepoNotFoundError,
  HubRevisionNotFoundError,
  HubUnauthorizedError,
} from '../../src/core/errors.js';
import { pullRepo, type PullParams, type PullProgress } from '../../src/hub/pull.js';
import { hfFileSource } from '../../src/sources/hf/index.js';
import { sha256Of, tempDir } from '../helpers/fixtures.js';
import { TestHub, commitHash, gitBlobSha1, sha256Hex, type TestHubFile } from '../support/test-hub.js';
import { MAIN, OTHER_TOKEN, TOKEN, V1, mainFiles, testRepos, v1Files } from './fixtures.js';

const etagOf = (file: TestHubFile): string =>
  file.bytes.length >= 1024 ? sha256Hex(file.bytes) : gitBlobSha1(file.bytes);

/** Every path under `dir`, relative, with what it is (dirs, files, symlinks and their targets). */
function tree(dir: string): Map<string, string> {
  const entries = new Map<string, string>();
  const walk = (at: string): void => {
    for (const name of readdirSync(at)) {
      const full = join(at, name);
      const rel = relative(dir, full);
      const stat = lstatSync(full);
      if (stat.isSymbolicLink()) entries.set(rel, `-> ${readlinkSync(full)}`);
      else if (stat.isDirectory()) {
        entries.set(rel, 'dir');
        walk(full);
      } else entries.set(rel, `file ${sha256Of(readFileSync(full))}`);
    }
  };
  walk(dir);
  return entries;
}

describe('loom pull (library) against a test Hub', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-');
  let n = 0;
  const fresh = (name: string): string => join(root, `${name}-${n++}`);
  const nodeCache = join(root, 'node-cache');
  const hubCache = join(root, 'hf-hub');
  const base = (): Partial<PullParams> => ({
    endpoint: hub.endpoint,
    token: TOKEN,
    cacheDir: nodeCache,
    env: {},
    fetch: { workers: 4, chunkSize: '256KiB', fsync: false },
  });

  before(async () => {
    hub = await TestHub.start({ repos: testRepos(), tokens: [TOKEN, OTHER_TOKEN], pageSize: 3 });
  });
  after(() => hub.close());

  it('pulls every file of the commit into the HF cache, laid out exactly as the Hub clients do', async () => {
    hub.resetStats();
    const result = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache });
    const repoDir = join(hubCache, 'models--acme--tiny-llm');
    assert.equal(result.commit, MAIN);
    assert.equal(result.dir, join(repoDir, 'snapshots', MAIN));

    const expected = new Map<string, string>();
    expected.set('blobs', 'dir');
    expected.set('refs', 'dir');
    expected.set('refs/main', `file ${sha256Of(Buffer.from(MAIN))}`);
    expected.set('snapshots', 'dir');
    expected.set(`snapshots/${MAIN}`, 'dir');
    for (const file of mainFiles) {
      const etag = etagOf(file);
      expected.set(`blobs/${etag}`, `file ${sha256Of(file.bytes)}`);
      const parts = file.path.split('/');
      for (let i = 1; i < parts.length; i++) expected.set(`snapshots/${MAIN}/${parts.slice(0, i).join('/')}`, 'dir');
      expected.set(`snapshots/${MAIN}/${file.path}`, `-> ${'../'.repeat(parts.length + 1)}blobs/${etag}`);
    }
    assert.deepEqual(tree(repoDir), expected);
    assert.equal(readFileSync(join(repoDir, 'refs', 'main'), 'utf8'), MAIN);
    // The lock files the Python client leaves behind, one per blob.
    assert.deepEqual(
      readdirSync(join(hubCache, '.locks', 'models--acme--tiny-llm')).sort(),
      mainFiles.map((f) => `${etagOf(f)}.lock`).sort(),
    );
    // Through the symlinks, every file is exact.
    for (const file of mainFiles) assert.ok(readFileSync(join(result.dir, file.path)).equals(file.bytes), file.path);
    // The bytes are stored once: each LFS blob is a hard link of the node cache's blob.
    for (const file of mainFiles.filter((f) => f.bytes.length >= 1024)) {
      const hf = statSync(join(repoDir, 'blobs', sha256Hex(file.bytes)));
      const node = statSync(blobPath(cacheLayout(nodeCache), sha256Hex(file.bytes)));
      assert.equal(hf.ino, node.ino, file.path);
    }
    assert.equal(result.files.length, mainFiles.length);
    assert.ok(result.files.every((f) => f.outcome === 'miss'));
    // The listing was paginated (3 entries a page) and the revision resolved once.
    assert.ok((hub.stats.hubRequests.tree ?? 0) >= 3, 'several tree pages');
    assert.equal(hub.stats.hubRequests.revision, 1);
    const lfsBytes = mainFiles.filter((f) => f.bytes.length >= 1024).reduce((s, f) => s + f.bytes.length, 0);
    assert.equal(hub.stats.cdnBytes, lfsBytes);
    // The token went to the Hub only: the CDN never saw an Authorization header.
    assert.ok(hub.stats.cdnRequests > 3);
    assert.equal(hub.stats.cdnAuthorizationHeaders, 0);
  });

  it('transfers nothing on a second pull of the same revision', async () => {
    hub.resetStats();
    const result = await pullRepo({ ...base(), repo: 'hf://acme/tiny-llm@main', hubCache });
    assert.equal(hub.stats.cdnBytes, 0);
    assert.equal(hub.stats.hubFileBytes, 0);
    assert.equal(hub.stats.cdnRequests, 0);
    assert.equal(hub.stats.hubRequests.resolve ?? 0, 0);
    assert.ok(result.files.every((f) => f.outcome === 'present'));
    assert.equal(result.transferredBytes, 0);
  });

  it('serves a new HF cache from the node cache without downloading a byte', async () => {
    hub.resetStats();
    const other = fresh('hf-other');
    const result = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: other });
    assert.equal(hub.stats.cdnBytes, 0);
    assert.equal(hub.stats.hubFileBytes, 0);
    assert.ok(result.files.every((f) => f.outcome === 'hit'));
    for (const file of mainFiles) assert.ok(readFileSync(join(result.dir, file.path)).equals(file.bytes));
  });

  it('takes every file from the one commit a tag names, and records the tag in refs/', async () => {
    hub.resetStats();
    const dir = fresh('hf-tag');
    const result = await pullRepo({ ...base(), repo: 'acme/tiny-llm@v1', hubCache: dir });
    assert.equal(result.commit, V1);
    assert.equal(hub.stats.hubRequests.revision, 1);
    const repoDir = join(dir, 'models--acme--tiny-llm');
    assert.equal(readFileSync(join(repoDir, 'refs', 'v1'), 'utf8'), V1);
    assert.deepEqual(readdirSync(join(repoDir, 'snapshots', V1)).sort(), v1Files.map((f) => f.path).sort());
    assert.ok(readFileSync(join(result.dir, 'config.json')).equals(v1Files[1]!.bytes));
  });

  it('writes no ref when the revision is a commit hash', async () => {
    const dir = fresh('hf-commit');
    const result = await pullRepo({ ...base(), repo: `acme/tiny-llm@${V1}`, hubCache: dir });
    assert.equal(result.commit, V1);
    assert.equal(existsSync(join(dir, 'models--acme--tiny-llm', 'refs')), false);
  });

  it('picks files with --include and --exclude globs', async () => {
    const dir = fresh('hf-globs');
    const jsons = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, include: ['*.json'] });
    assert.deepEqual(
      jsons.files.map((f) => f.path),
      ['config.json', 'original/params.json', 'tokenizer.json'],
    );
    const noOriginal = await pullRepo({
      ...base(),
      repo: 'acme/tiny-llm',
      hubCache: fresh('hf-globs'),
      exclude: ['original/', '*.md'],
    });
    assert.deepEqual(
      noOriginal.files.map((f) => f.path),
      ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'tokenizer.json'],
    );
  });

  it('names a folder that exists when no file matches, and a later offline pull finds the snapshot', async () => {
    const dir = fresh('hf-none');
    const none = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, include: ['*.nothing'] });
    assert.deepEqual(none.files, []);
    assert.deepEqual(readdirSync(none.dir), [], 'the snapshot folder printed exists, empty');
    const offline = await pullRepo({
      ...base(),
      repo: 'acme/tiny-llm',
      hubCache: dir,
      include: ['*.nothing'],
      env: { HF_HUB_OFFLINE: '1' },
    });
    assert.equal(offline.dir, none.dir);
    const out = fresh('out-none');
    const plain = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, out, include: ['*.nothing'] });
    assert.equal(plain.dir, out);
    assert.deepEqual(readdirSync(out), []);
  });

  it('offline pulls of one repo to one --out at once all succeed, each file whole', async () => {
    // Several jobs of a node starting from the same HF cache (a pod's containers, a retried job):
    // each file was removed then linked into place, and a second pull linking between the
    // first's removal and its link failed with EEXIST.
    const dir = fresh('hf-offline-race');
    await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir });
    const out = fresh('out-offline-race');
    const pulls = await Promise.allSettled(
      [0, 1, 2, 3].map(() =>
        pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, out, env: { HF_HUB_OFFLINE: '1' } }),
      ),
    );
    assert.deepEqual(
      pulls.filter((p) => p.status === 'rejected').map((p) => String((p as PromiseRejectedResult).reason)),
      [],
    );
    for (const file of mainFiles) assert.equal(sha256Of(readFileSync(join(out, file.path))), sha256Of(file.bytes));
    assert.deepEqual(
      readdirSync(out, { recursive: true }).filter((f) => String(f).includes('.loom-')),
      [],
      'no temporary link left',
    );
  });

  it('says a repo with no files has none (not that the filters matched nothing)', async () => {
    const empty = await TestHub.start({
      repos: [{ id: 'acme/empty', commits: [{ sha: commitHash('empty'), files: [] }] }],
      tokens: [TOKEN],
    });
    try {
      const said: string[] = [];
      const dir = fresh('hf-empty');
      const result = await pullRepo({
        ...base(),
        endpoint: empty.endpoint,
        repo: 'acme/empty',
        hubCache: dir,
        onStatus: (m) => said.push(m),
      });
      assert.deepEqual(said, ['the repo hf://acme/empty@main has no files']);
      assert.deepEqual(readdirSync(result.dir), []);
    } finally {
      await empty.close();
    }
  });

  it('writes plain files under --out', async () => {
    const out = fresh('out');
    const result = await pullRepo({ ...base(), repo: 'acme/tiny-llm', out, hubCache: fresh('unused') });
    assert.equal(result.layout, 'plain');
    for (const file of mainFiles) {
      const path = join(out, file.path);
      assert.ok(lstatSync(path).isFile(), `${file.path} is a plain file`);
      assert.ok(readFileSync(path).equals(file.bytes), file.path);
    }
    assert.deepEqual(
      readdirSync(out, { recursive: true })
        .map(String)
        .filter((p) => p.includes('loom')),
      [],
    );
  });

  it('pulls a dataset into datasets--org--name', async () => {
    const dir = fresh('hf-dataset');
    const progress: PullProgress[] = [];
    const result = await pullRepo({
      ...base(),
      repo: 'hf://datasets/acme/corpus',
      hubCache: dir,
      onProgress: (p) => progress.push(structuredClone(p)),
    });
    // One progress for the whole pull: it ends with every file and byte accounted for.
    assert.deepEqual(progress.at(-1), {
      filesDone: 2,
      filesTotal: 2,
      bytesDone: result.bytes,
      bytesTotal: result.bytes,
      active: [],
    });
    assert.equal(result.repoType, 'dataset');
    assert.ok(
      existsSync(join(dir, 'datasets--acme--corpus', 'snapshots', result.commit, 'data', 'train-00000.parquet')),
    );
    const again = await pullRepo({ ...base(), repo: 'acme/corpus', repoType: 'dataset', hubCache: dir });
    assert.ok(again.files.every((f) => f.outcome === 'present'));
  });

  it('catches a corrupted CDN response by its sha256 and keeps nothing of it', async () => {
    const file = mainFiles[1]!;
    const sha = sha256Hex(file.bytes);
    const dir = fresh('hf-corrupt');
    const cacheDir = fresh('node-corrupt');
    hub.corrupt.add(sha);
    try {
      await assert.rejects(
        pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, cacheDir }),
        (err: unknown) => err instanceof DigestMismatchError && err.expected === sha,
      );
    } finally {
      hub.corrupt.delete(sha);
    }
    const repoDir = join(dir, 'models--acme--tiny-llm');
    assert.equal(existsSync(join(repoDir, 'blobs', sha)), false);
    assert.equal(existsSync(join(repoDir, 'blobs', `${sha}.incomplete`)), false);
    assert.equal(existsSync(join(repoDir, 'snapshots', MAIN, file.path)), false);
    assert.equal(existsSync(join(repoDir, 'refs', 'main')), false, 'no ref to a partial snapshot');
    assert.equal(existsSync(blobPath(cacheLayout(cacheDir), sha)), false);
    // Once the CDN is healthy, a rerun completes.
    const result = await pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, cacheDir });
    assert.ok(readFileSync(join(result.dir, file.path)).equals(file.bytes));
  });

  it('catches a corrupted small file by its git sha1, removes it from the node cache, and recovers', async () => {
    const file = mainFiles[3]!; // config.json
    const sha1 = gitBlobSha1(file.bytes);
    const dir = fresh('hf-corrupt-small');
    const cacheDir = fresh('node-corrupt-small');
    hub.corrupt.add(sha1);
    try {
      await assert.rejects(
        pullRepo({ ...base(), repo: 'acme/tiny-llm', hubCache: dir, cacheDir, include: ['config.json'] }),
        (err: unknown) => err instanceof DigestMismatchError && err.expected === sha1,
      );
    } finally {
      hub.corrupt.delete(sha1);
    }
    const blobs = join(dir, 'models--acme--tiny-llm', 'blobs');
    assert.deepEqual(readdirSync(blobs), []);
    const result = await pullRepo({
      ...base(),
      repo: 'acme/tiny-llm',
      hubCache: dir,
      cacheDir,
      include: ['config.json'],
    });
    assert.equal(result.files[0]!.outcome, 'miss', 'downloaded again, not served from the node cache');
    assert.ok(readFileSync(join(result.dir, 'config.json')).equals(file.bytes));
  });

  it('survives CDN URLs that expire in the middle of a download', async () => {
    const slow = await TestHub.start({
      repos: testRepos(),
      tokens: [TOKEN],
      signatureTtlMs: 150,
      cdnBytesPerSecond: 4 * 1024 * 1024,
    });
    try {
      const result = await pullRepo({
        ...base(),
        endpoint: slow.endpoint,
        repo: 'acme/tiny-llm',
        hubCache: fresh('hf-expiry'),
        cacheDir: fresh('node-expiry'),
        include: ['model-00001-of-00002.safetensors'],
        fetch: { workers: 2, chunkSize: '128KiB', maxRequestSize: '128KiB', fsync: false },
      });
      assert.ok(slow.stats.cdnExpired > 0, 'some CDN requests met an expired signature');
      const file = mainFiles[0]!;
      assert.ok(readFileSync(join(result.dir, file.path)).equals(file.bytes));
      assert.equal(result.files[0]!.outcome, 'miss');
      // Carried on where it stood: nothing fetched twice but the one byte each fresh URL's probe asks for.
      assert.ok(slow.stats.cdnBytes <= file.bytes.length + slow.stats.cdnExpired, `${slow.stats.cdnBytes} CDN bytes`);
      assert.equal(slow.stats.cdnAuthorizationHeaders, 0);
    } finally {
      await slow.close();
    }
  });

  describe("the Hub's errors, typed", () => {
    const pull = (params: Partial<PullParams>): Promise<unknown> =>
      pullRepo({ ...base(), hubCache: fresh('hf-err'), repo: 'acme/tiny-llm', ...params });

    it('RepoNotFound', async () => {
      await assert.rejects(pull({ repo: 'acme/nope' }), HubRepoNotFoundError);
      await assert.rejects(pull({ repo: 'acme/tiny-llm', repoType: 'dataset' }), HubRepoNotFoundError);
    });

    it('RevisionNotFound', async () => {
      await assert.rejects(pull({ repo: 'acme/tiny-llm@no-such-branch' }), (err: unknown) => {
        assert.ok(err instanceof HubRevisionNotFoundError);
        assert.match(err.message, /revision "no-such-branch" not found in acme\/tiny-llm/);
        return true;
      });
    });

    it('GatedRepo without a token and with a token that has no access', async () => {
      await assert.rejects(pull({ repo: 'acme/gated-llm', token: undefined }), (err: unknown) => {
        assert.ok(err instanceof HubGatedRepoError);
        assert.equal(err.status, 401);
        assert.match(err.message, /no token was given/);
        return true;
      });
      await assert.rejects(pull({ repo: 'acme/gated-llm', token: OTHER_TOKEN }), (err: unknown) => {
        assert.ok(err instanceof HubGatedRepoError);
        assert.equal(err.status, 403);
        return true;
      });
      const ok = (await pull({ repo: 'acme/gated-llm' })) as { files: unknown[] };
      assert.equal(ok.files.length, 1);
    });

    it('401 for a token the Hub refuses', async () => {
      await assert.rejects(pull({ token: 'hf_wrong' }), HubUnauthorizedError);
    });

    it('EntryNotFound for a file that is not there', async () => {
      await assert.rejects(
        hfFileSource('hf://acme/tiny-llm/nope.bin', { endpoint: hub.endpoint, env: {} }),
        HubEntryNotFoundError,
      );
    });

    it('429: waits as Retry-After says and carries on, else fails with a typed error', async () => {
      hub.rateLimit = { remaining: 2, retryAfterSeconds: 1 };
      const said: string[] = [];
      const result = (await pull({ onStatus: (m) => said.push(m) })) as { files: unknown[] };
      assert.equal(result.files.length, mainFiles.length);
      // Each wait is said before it starts, not left silent.
      assert.deepEqual(said, [
        'the Hub answered HTTP 429 for hf://acme/tiny-llm@main; retrying in 1 s (attempt 2 of 4)',
        'the Hub answered HTTP 429 for hf://acme/tiny-llm@main; retrying in 1 s (attempt 3 of 4)',
      ]);
      assert.equal(hub.rateLimit.remaining, 0);
      hub.rateLimit = { remaining: 100, retryAfterSeconds: 0 };
      await assert.rejects(pull({}), HubRateLimitedError);
      hub.rateLimit = { remaining: 1, retryAfterSeconds: 3600 };
      await assert.rejects(
        pull({}),
        (err: unknown) => err instanceof HubRateLimitedError && /3600 s/.test(err.message),
      );
      hub.rateLimit = { remaining: 0, retryAfterSeconds: 0 };
    });
  });
});
