// The HF cache Loom writes, checked against the Hub's own JS client (@huggingface/hub, the
// one official client that runs here: PyPI is unreachable, so huggingface_hub cannot be
// installed). Its snapshotDownload fills a second cache from the same test Hub; the two
// must be identical entry by entry, and its scanCacheDir must read Loom's cache whole.
import assert from 'node:assert/strict';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { scanCacheDir, snapshotDownload } from '@huggingface/hub';
import { pullRepo } from '../../src/hub/pull.js';
import { sha256Of, tempDir } from '../helpers/fixtures.js';
import { TestHub } from '../support/test-hub.js';
import { MAIN, TOKEN, V1, mainFiles, testRepos } from './fixtures.js';

function tree(dir: string): Record<string, string> {
  const entries: Record<string, string> = {};
  const walk = (at: string): void => {
    for (const name of readdirSync(at).sort()) {
      const full = join(at, name);
      const rel = relative(dir, full);
      const stat = lstatSync(full);
      if (stat.isSymbolicLink()) entries[rel] = `-> ${readlinkSync(full)}`;
      else if (stat.isDirectory()) {
        entries[rel] = 'dir';
        walk(full);
      } else entries[rel] = `file ${sha256Of(readFileSync(full))}`;
    }
  };
  walk(dir);
  return entries;
}

describe('the HF cache layout, against @huggingface/hub', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-layout-');
  before(async () => {
    hub = await TestHub.start({ repos: testRepos(), tokens: [TOKEN], pageSize: 4 });
  });
  after(() => hub.close());

  it("is identical, entry by entry, to what the Hub's JS client writes", async () => {
    const loomCache = join(root, 'loom');
    const jsCache = join(root, 'js');
    for (const revision of ['main', 'v1']) {
      await pullRepo({
        repo: 'acme/tiny-llm',
        revision,
        endpoint: hub.endpoint,
        token: TOKEN,
        hubCache: loomCache,
        cacheDir: join(root, 'node'),
        env: {},
        fetch: { fsync: false },
      });
      const quiet = console.debug;
      console.debug = () => undefined;
      try {
        await snapshotDownload({
          repo: 'acme/tiny-llm',
          revision,
          cacheDir: jsCache,
          hubUrl: hub.endpoint,
          accessToken: TOKEN,
        });
      } finally {
        console.debug = quiet;
      }
    }
    const folder = 'models--acme--tiny-llm';
    const theirs = tree(join(jsCache, folder));
    assert.ok(Object.keys(theirs).length > mainFiles.length * 2, 'the JS client wrote a full snapshot');
    assert.deepEqual(tree(join(loomCache, folder)), theirs);
  });

  it("is read whole by the JS client's scanCacheDir", async () => {
    const info = await scanCacheDir(join(root, 'loom'));
    assert.deepEqual(info.warnings, []);
    assert.equal(info.repos.length, 1);
    const repo = info.repos[0]!;
    assert.deepEqual(repo.id, { name: 'acme/tiny-llm', type: 'model' });
    const revisions = new Map(repo.revisions.map((r) => [r.commitOid, r]));
    assert.deepEqual([...revisions.keys()].sort(), [MAIN, V1].sort());
    assert.deepEqual(revisions.get(MAIN)!.refs, ['main']);
    assert.deepEqual(revisions.get(V1)!.refs, ['v1']);
    // scanCacheDir lists the top level of a snapshot only (it skips directories by design).
    const topLevel = mainFiles.filter((f) => !f.path.includes('/'));
    const snapshot = join(root, 'loom', 'models--acme--tiny-llm', 'snapshots', MAIN);
    const files = revisions.get(MAIN)!.files;
    assert.deepEqual(files.map((f) => relative(snapshot, f.path)).sort(), topLevel.map((f) => f.path).sort());
    for (const file of files) {
      const expected = topLevel.find((f) => f.path === relative(snapshot, file.path))!;
      assert.equal(file.blob.size, expected.bytes.length, file.path);
    }
  });
});
