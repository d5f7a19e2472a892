// The repos the Hub tests pull: several multi-piece LFS files, small files, nested paths,
// a tag on another commit, a gated repo and a dataset.
import { randomBytes } from 'node:crypto';
import { commitHash, type TestHubFile, type TestHubRepo } from '../support/test-hub.js';

export const TOKEN = 'hf_loom_test_token_granted';
/** Valid on the Hub, but not granted access to the gated repo. */
export const OTHER_TOKEN = 'hf_loom_test_token_other';

const MiB = 1024 * 1024;

export const MAIN = commitHash('tiny-llm main');
export const V1 = commitHash('tiny-llm v1');

export const mainFiles: TestHubFile[] = [
  { path: 'model-00001-of-00002.safetensors', bytes: randomBytes(3 * MiB) },
  { path: 'model-00002-of-00002.safetensors', bytes: randomBytes(2.5 * MiB) },
  { path: 'original/sub/consolidated.pth', bytes: randomBytes(1.2 * MiB) },
  { path: 'config.json', bytes: Buffer.from('{"model_type":"llama","hidden_size":64}\n') },
  { path: 'tokenizer.json', bytes: Buffer.from(`{"vocab":"${'x'.repeat(600)}"}\n`) },
  { path: 'README.md', bytes: Buffer.from('# tiny-llm\nA test model.\n') },
  { path: 'original/params.json', bytes: Buffer.from('{"dim":64}\n') },
];

export const v1Files: TestHubFile[] = [
  mainFiles[0]!,
  { path: 'config.json', bytes: Buffer.from('{"model_type":"llama","hidden_size":32}\n') },
];

export function testRepos(): TestHubRepo[] {
  return [
    {
      id: 'acme/tiny-llm',
      commits: [
        { sha: MAIN, files: mainFiles },
        { sha: V1, files: v1Files },
      ],
      refs: { main: MAIN, v1: V1 },
    },
    {
      id: 'acme/gated-llm',
      gated: true,
      commits: [{ sha: commitHash('gated'), files: [{ path: 'w.safetensors', bytes: randomBytes(64 * 1024) }] }],
    },
    {
      id: 'acme/corpus',
      type: 'dataset',
      commits: [
        {
          sha: commitHash('corpus'),
          files: [
            { path: 'data/train-00000.parquet', bytes: randomBytes(300 * 1024) },
            { path: 'README.md', bytes: Buffer.from('# corpus\n') },
          ],
        },
      ],
    },
  ];
}
