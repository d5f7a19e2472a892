// hf:// names and the Hub's settings, read the way the Hub's own clients read them.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hubCacheDir, repoFolderName } from '../../src/cache/hf-layout.js';
import { InvalidUrlError } from '../../src/core/errors.js';
import { pathFilter } from '../../src/hub/pull.js';
import { nextLink, normalizeEtag } from '../../src/sources/hf/api.js';
import { hubEndpoint, hubOffline, hubToken } from '../../src/sources/hf/config.js';
import { parseHfRef, resolveUrl } from '../../src/sources/hf/uri.js';
import { tempDir } from '../helpers/fixtures.js';

describe('hf:// names', () => {
  it('parses repos, revisions, files and repo types', () => {
    assert.deepEqual(parseHfRef('meta-llama/Llama-3.1-8B'), {
      repoType: 'model',
      repoId: 'meta-llama/Llama-3.1-8B',
      revision: undefined,
      path: undefined,
    });
    assert.deepEqual(parseHfRef('hf://org/repo@v1.0/sub/dir/model.safetensors'), {
      repoType: 'model',
      repoId: 'org/repo',
      revision: 'v1.0',
      path: 'sub/dir/model.safetensors',
    });
    assert.deepEqual(parseHfRef('hf://datasets/org/name@refs%2Fpr%2F3'), {
      repoType: 'dataset',
      repoId: 'org/name',
      revision: 'refs/pr/3',
      path: undefined,
    });
    assert.equal(parseHfRef('org/name', 'dataset').repoType, 'dataset');
    assert.equal(parseHfRef('hf://spaces/org/app/app.py').repoType, 'space');
  });

  it('refuses what is not a repo, and a type that contradicts --repo-type', () => {
    for (const bad of ['gpt2', 'hf://org', 'org/re po', 'org/repo@', 'hf://org/repo/../x', 'org//x']) {
      assert.throws(() => parseHfRef(bad), InvalidUrlError, bad);
    }
    assert.throws(() => parseHfRef('hf://datasets/org/name', 'model'), /--repo-type is model/);
  });

  it('builds resolve URLs with datasets/ and encoded revisions and paths', () => {
    assert.equal(
      resolveUrl('https://hub.example', { repoType: 'dataset', repoId: 'o/n' }, 'refs/pr/1', 'a b/c.json'),
      'https://hub.example/datasets/o/n/resolve/refs%2Fpr%2F1/a%20b/c.json',
    );
    assert.equal(
      resolveUrl('https://hub.example', { repoType: 'model', repoId: 'o/n' }, 'main', 'x'),
      'https://hub.example/o/n/resolve/main/x',
    );
  });
});

describe('Hub settings', () => {
  it('takes HF_ENDPOINT without its trailing slash, else the public Hub', () => {
    assert.equal(hubEndpoint({ HF_ENDPOINT: 'http://mirror.local:8080/' }), 'http://mirror.local:8080');
    assert.equal(hubEndpoint({}), 'https://huggingface.co');
  });

  it('finds the token: flag, HF_TOKEN, HF_TOKEN_PATH, then $HF_HOME/token', () => {
    const home = tempDir('loom-hf-home-');
    writeFileSync(join(home, 'token'), 'hf_from_home\n');
    const path = join(home, 'other');
    writeFileSync(path, '  hf_from_path  ');
    assert.equal(hubToken('hf_flag', { HF_TOKEN: 'hf_env', HF_HOME: home }), 'hf_flag');
    assert.equal(hubToken(undefined, { HF_TOKEN: 'hf_env', HF_HOME: home }), 'hf_env');
    assert.equal(hubToken(undefined, { HF_TOKEN_PATH: path, HF_HOME: home }), 'hf_from_path');
    assert.equal(hubToken(undefined, { HF_HOME: home }), 'hf_from_home');
    assert.equal(hubToken(undefined, { HF_HOME: join(home, 'none') }), undefined);
  });

  it('reads HF_HUB_OFFLINE like the Python client', () => {
    for (const on of ['1', 'true', 'YES', 'on']) assert.equal(hubOffline({ HF_HUB_OFFLINE: on }), true);
    for (const off of ['', '0', 'false']) assert.equal(hubOffline({ HF_HUB_OFFLINE: off }), false);
  });

  it('puts the HF cache at HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub', () => {
    assert.equal(hubCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }), '/a');
    assert.equal(hubCacheDir({ HF_HOME: '/b' }), '/b/hub');
    assert.equal(hubCacheDir({ XDG_CACHE_HOME: '/x' }), '/x/huggingface/hub');
    assert.equal(repoFolderName('dataset', 'org/name'), 'datasets--org--name');
  });
});

describe('Hub protocol details', () => {
  it('strips quotes and W/ from ETags', () => {
    assert.equal(normalizeEtag('"abc"'), 'abc');
    assert.equal(normalizeEtag('W/"abc"'), 'abc');
  });

  it('follows Link rel="next", relative or absolute', () => {
    assert.equal(
      nextLink('<https://h/api/models/o/n/tree/c?cursor=x>; rel="next"', 'https://h/api/x'),
      'https://h/api/models/o/n/tree/c?cursor=x',
    );
    assert.equal(nextLink('</api/t?cursor=2>; rel="next"', 'https://h/api/t'), 'https://h/api/t?cursor=2');
    assert.equal(nextLink('</a>; rel="prev"', 'https://h/'), undefined);
    assert.equal(nextLink(undefined, 'https://h/'), undefined);
  });

  it('matches --include/--exclude globs like the hf CLI: names at any depth, dir/ for a directory', async () => {
    const keep = await pathFilter(['*.safetensors', 'original/'], ['*-00002-*']);
    assert.equal(keep('model-00001-of-00002.safetensors'), true);
    assert.equal(keep('sub/model.safetensors'), true);
    assert.equal(keep('model-00002-of-00002.safetensors'), false);
    assert.equal(keep('original/sub/consolidated.pth'), true);
    assert.equal(keep('config.json'), false);
    assert.equal((await pathFilter())('anything/at/all'), true);
  });
});
