// A lying Hub (or mirror, or tampered answer) against loom pull and loom fetch hf://: every
// value it gives that names something on disk (tree oids, X-Repo-Commit, ETag, a ref's name)
// is checked before the disk is touched, its pages are followed only on its own origin (the
// token never leaves it) and never round in a circle, and a snapshot link that leads out of
// the HF cache is not served offline. Each lie fails with a typed error and writes nothing.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BadResponseError, CacheError, EXIT, UsageError } from '../../src/core/errors.js';
import { fetchHfFile } from '../../src/hub/fetch-hf-file.js';
import { pullRepo, type PullParams } from '../../src/hub/pull.js';
import { HubApi, parseHfRef } from '../../src/sources/hf/index.js';
import { runLoom, tempDir } from '../helpers/fixtures.js';
import { TestHub, type HubEntry } from '../support/test-hub.js';
import { MAIN, TOKEN, mainFiles, testRepos } from './fixtures.js';

const SECRET = 'TOP SECRET private key\n';

describe('a lying Hub', () => {
  let hub: TestHub;
  const root = tempDir('loom-hf-liar-');
  let n = 0;
  /** A fresh folder whose HF cache is `<it>/hub`: `../../..` from a blob climbs to the folder. */
  const fresh = (): string => {
    const dir = join(root, `case-${n++}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'secret.txt'), SECRET);
    return dir;
  };
  const base = (dir: string): PullParams => ({
    repo: 'acme/tiny-llm',
    endpoint: hub.endpoint,
    token: TOKEN,
    hubCache: join(dir, 'hub'),
    cacheDir: join(dir, 'node-cache'),
    env: {},
    fetch: { workers: 4, chunkSize: '256KiB', fsync: false },
  });
  /** Every entry under `dir` (relative), to show nothing was written. */
  const listing = (dir: string): string[] =>
    existsSync(dir) ? readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort() : [];
  const lie = (change: (file: HubEntry) => unknown): ((entries: HubEntry[]) => unknown[]) => {
    return (entries) => entries.map((e) => (e.path === 'model-00001-of-00002.safetensors' ? change(e) : e));
  };
  const smallLie = (change: (file: HubEntry) => unknown): ((entries: HubEntry[]) => unknown[]) => {
    return (entries) => entries.map((e) => (e.path === 'config.json' ? change(e) : e));
  };

  before(async () => {
    const repos = testRepos();
    // A Hub that resolves a revision climbing out of refs/ (git refuses such names).
    repos[0]!.refs = { ...repos[0]!.refs, '../../escape': MAIN };
    hub = await TestHub.start({ repos, tokens: [TOKEN], pageSize: 3 });
  });
  after(() => hub.close());
  const reset = (): void => {
    hub.treeLie = undefined;
    hub.nextLinkLie = undefined;
    hub.resolveHeaderLies = undefined;
    hub.resetStats();
  };

  it('an lfs.oid of ../../../secret.txt: refused before anything is linked to it (it was linked, exit 0)', async () => {
    reset();
    const dir = fresh();
    hub.treeLie = lie((e) => ({ ...e, lfs: { oid: '../../../secret.txt', size: SECRET.length } }));
    try {
      await assert.rejects(pullRepo(base(dir)), (err: unknown) => {
        assert.ok(err instanceof BadResponseError, String(err));
        assert.match(
          err.message,
          /"model-00001-of-00002\.safetensors" the lfs\.oid "\.\.\/\.\.\/\.\.\/secret\.txt", not a sha256/,
        );
        assert.equal(err.exitCode, EXIT.network);
        return true;
      });
    } finally {
      reset();
    }
    assert.deepEqual(listing(join(dir, 'hub')), [], 'nothing in the HF cache');
    assert.equal(hub.stats.cdnRequests + (hub.stats.hubRequests.resolve ?? 0), 0, 'no file asked for');
    assert.equal(readFileSync(join(dir, 'secret.txt'), 'utf8'), SECRET);
  });

  it('an oid of ../../../pwned: refused before a lock file is created outside the HF cache', async () => {
    reset();
    const dir = fresh();
    hub.treeLie = smallLie((e) => ({ ...e, oid: '../../../pwned' }));
    try {
      await assert.rejects(pullRepo(base(dir)), /"config\.json" the oid "\.\.\/\.\.\/\.\.\/pwned", not a git sha1/);
    } finally {
      reset();
    }
    assert.equal(existsSync(join(dir, 'pwned.lock')), false);
    assert.deepEqual(listing(join(dir, 'hub')), []);
  });

  it('refuses oids that are upper case, short, not strings, and sizes that are not sizes', async () => {
    const sha256 = 'ab'.repeat(32);
    const lies: Array<[string, (e: HubEntry) => unknown, RegExp]> = [
      ['upper-case sha256', (e) => ({ ...e, lfs: { ...e.lfs, oid: sha256.toUpperCase() } }), /lfs\.oid "ABAB/],
      ['short sha256', (e) => ({ ...e, lfs: { ...e.lfs, oid: sha256.slice(1) } }), /lfs\.oid "babab/],
      ['sha1 as lfs.oid', (e) => ({ ...e, lfs: { ...e.lfs, oid: e.oid } }), /not a sha256/],
      ['oid a number', (e) => ({ ...e, oid: 7 }), /the oid 7, not a git sha1/],
      ['oid missing', (e) => ({ ...e, oid: undefined }), /the oid undefined, not a git sha1/],
      ['negative lfs size', (e) => ({ ...e, lfs: { ...e.lfs, size: -1 } }), /the lfs\.size -1/],
      ['size a string', (e) => ({ ...e, size: '12' }), /the size "12"/],
    ];
    const api = new HubApi({ endpoint: hub.endpoint, token: TOKEN });
    try {
      for (const [what, change, message] of lies) {
        hub.treeLie = lie(change);
        await assert.rejects(api.listTree(parseHfRef('acme/tiny-llm'), MAIN), (err: unknown) => {
          assert.ok(err instanceof BadResponseError, `${what}: ${String(err)}`);
          assert.match(err.message, message, what);
          return true;
        });
      }
      // The truth still passes, directories included.
      hub.treeLie = undefined;
      const entries = await api.listTree(parseHfRef('acme/tiny-llm'), MAIN);
      assert.equal(entries.filter((e) => e.type === 'file').length, mainFiles.length);
    } finally {
      api.close();
      reset();
    }
  });

  it('a next page on another host or scheme is not followed, and the token never leaves the Hub', async () => {
    reset();
    const api = new HubApi({ endpoint: hub.endpoint, token: TOKEN });
    try {
      // The CDN's port: another origin, which counts every request and Authorization header.
      hub.nextLinkLie = () => `${hub.cdnOrigin}/steal?page=2`;
      await assert.rejects(api.listTree(parseHfRef('acme/tiny-llm'), MAIN), (err: unknown) => {
        assert.ok(err instanceof BadResponseError, String(err));
        assert.match(err.message, new RegExp(`sends its next page to ${hub.cdnOrigin}, not to ${hub.endpoint}`));
        return true;
      });
      assert.equal(hub.stats.cdnRequests, 0, 'no request to the other host');
      assert.equal(hub.stats.cdnAuthorizationHeaders, 0);
      hub.nextLinkLie = () => hub.endpoint.replace('http:', 'https:') + '/api/models/acme/tiny-llm/tree/x?cursor=3';
      await assert.rejects(api.listTree(parseHfRef('acme/tiny-llm'), MAIN), /sends its next page to https:/);
      // A relative next link is on the Hub's origin: followed.
      hub.nextLinkLie = (page) => (page.searchParams.get('cursor') ? undefined : '?recursive=true&cursor=3');
      const entries = await api.listTree(parseHfRef('acme/tiny-llm'), MAIN);
      assert.equal(entries.length, 6, 'two pages of three');
    } finally {
      api.close();
      reset();
    }
  });

  it(
    'a listing whose pages go round (A, B, A, …) fails at once instead of looping for ever',
    { timeout: 30_000 },
    async () => {
      reset();
      const dir = fresh();
      hub.nextLinkLie = (page) => {
        const next = new URL(page);
        next.searchParams.set('cursor', page.searchParams.get('cursor') === '3' ? '0' : '3');
        return next.href;
      };
      try {
        await assert.rejects(pullRepo(base(dir)), (err: unknown) => {
          assert.ok(err instanceof BadResponseError, String(err));
          assert.match(err.message, /goes back to a page it gave before/);
          return true;
        });
        assert.equal(hub.stats.hubRequests.tree, 3, 'first page, cursor 3, then the first page again is refused');
        // A page that names itself as next.
        hub.nextLinkLie = (page) => page.href;
        await assert.rejects(pullRepo(base(dir)), /goes back to a page it gave before/);
      } finally {
        reset();
      }
      assert.deepEqual(listing(join(dir, 'hub')), []);
    },
  );

  it('a listing that pages for ever through new URLs stops at the page limit', { timeout: 30_000 }, async () => {
    reset();
    let cursor = 0;
    hub.nextLinkLie = (page) => {
      const next = new URL(page);
      next.searchParams.set('cursor', String(++cursor % 3));
      next.searchParams.set('n', String(cursor));
      return next.href;
    };
    const api = new HubApi({ endpoint: hub.endpoint, token: TOKEN, maxPages: 5 });
    try {
      await assert.rejects(api.listTree(parseHfRef('acme/tiny-llm'), MAIN), /goes on past 5 pages/);
      assert.equal(hub.stats.hubRequests.tree, 5);
    } finally {
      api.close();
      reset();
    }
  });

  it('X-Repo-Commit and ETag that are not the Hub forms are refused before a byte is fetched', async () => {
    const dir = fresh();
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ 'x-repo-commit': '../../escape' }, 'config.json', /X-Repo-Commit "\.\.\/\.\.\/escape", not a commit hash/],
      [{ etag: '"../../escape"' }, 'config.json', /ETag "\\"\.\.\/\.\.\/escape\\"", neither a git sha1/],
      [{ 'x-linked-etag': '"ABCD"' }, 'model-00001-of-00002.safetensors', /ETag "\\"ABCD\\""/],
    ];
    try {
      for (const [headers, path, message] of cases) {
        reset();
        hub.resolveHeaderLies = headers;
        const out = join(dir, 'one-file');
        await assert.rejects(
          fetchHfFile(`hf://acme/tiny-llm/${path}`, out, {
            token: TOKEN,
            cacheDir: join(dir, 'node-cache'),
            env: { HF_ENDPOINT: hub.endpoint },
            fsync: false,
          }),
          (err: unknown) => {
            assert.ok(err instanceof BadResponseError, String(err));
            assert.match(err.message, message);
            return true;
          },
        );
        assert.equal(existsSync(out), false);
        assert.equal(hub.stats.cdnRequests + hub.stats.hubFileBytes, 0, 'no byte fetched');
      }
    } finally {
      reset();
    }
  });

  it('a revision that climbs out of refs/ is refused before any request (the Hub would resolve it)', async () => {
    reset();
    const dir = fresh();
    await assert.rejects(pullRepo({ ...base(dir), revision: '../../escape' }), (err: unknown) => {
      assert.ok(err instanceof UsageError, String(err));
      assert.match(err.message, /the revision "\.\.\/\.\.\/escape" is not a branch, tag or commit name/);
      return true;
    });
    assert.deepEqual(hub.stats.hubRequests, {}, 'no request');
    assert.equal(existsSync(join(dir, 'hub', 'escape')), false);
  });

  it('offline, a snapshot link that leads out of the HF cache is neither hard-linked into --out nor served', async () => {
    reset();
    const dir = fresh();
    await pullRepo({ ...base(dir), include: ['config.json'] });
    // What a lying Hub left before blob names were checked: a snapshot link to a foreign file.
    const snapshot = join(dir, 'hub', 'models--acme--tiny-llm', 'snapshots', MAIN);
    symlinkSync('../../../../secret.txt', join(snapshot, 'model.safetensors'));
    assert.equal(readFileSync(join(snapshot, 'model.safetensors'), 'utf8'), SECRET, 'the planted link works');
    const out = join(dir, 'plain');
    await assert.rejects(pullRepo({ ...base(dir), offline: true, out }), (err: unknown) => {
      assert.ok(err instanceof CacheError, String(err));
      assert.match(err.message, /model\.safetensors leads out of .*models--acme--tiny-llm \(to .*secret\.txt\)/);
      return true;
    });
    assert.equal(existsSync(join(out, 'model.safetensors')), false, 'the foreign file is not linked into --out');
    const one = join(dir, 'one.safetensors');
    await assert.rejects(
      fetchHfFile('hf://acme/tiny-llm/model.safetensors', one, {
        env: { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(dir, 'hub') },
      }),
      CacheError,
    );
    assert.equal(existsSync(one), false);
    // The true files are still served offline.
    await fetchHfFile('hf://acme/tiny-llm/config.json', join(dir, 'config.json'), {
      env: { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(dir, 'hub') },
    });
    assert.ok(readFileSync(join(dir, 'config.json')).equals(mainFiles[3]!.bytes));
  });

  it('loom pull says which file the Hub lied about, in one line, with the exit code of a bad response', async () => {
    reset();
    const dir = fresh();
    hub.treeLie = lie((e) => ({ ...e, lfs: { oid: '../../../secret.txt', size: SECRET.length } }));
    try {
      const run = await runLoom(['pull', 'acme/tiny-llm', '--no-fsync'], {
        HF_ENDPOINT: hub.endpoint,
        HF_TOKEN: TOKEN,
        HF_HUB_CACHE: join(dir, 'hub'),
        LOOM_CACHE_DIR: join(dir, 'node-cache'),
        HF_HUB_OFFLINE: '',
      });
      assert.equal(run.code, EXIT.network, run.stderr);
      assert.equal(run.stdout, '');
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, /model-00001-of-00002\.safetensors.*lfs\.oid.*not a sha256/);
    } finally {
      reset();
    }
    assert.deepEqual(listing(join(dir, 'hub')), []);
  });
});
