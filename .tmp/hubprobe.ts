import { randomBytes } from 'node:crypto';
import { TestHub, commitHash } from '../test/support/test-hub.js';
const files = [];
for (let i = 1; i <= 4; i++) files.push({ path: `m${i}.safetensors`, bytes: randomBytes(16 << 20), lfs: true });
for (let i = 0; i < 20; i++) files.push({ path: `c${i}.json`, bytes: randomBytes(2048), lfs: false });
const hub = await TestHub.start({ repos: [{ id: 'b/x', commits: [{ sha: commitHash('b'), files }] }], hubFirstByteMs: 100, cdnFirstByteMs: 100, cdnBytesPerSecond: 50e6 });
console.log(hub.endpoint);
process.on('SIGTERM', async () => { await hub.close(); process.exit(0); });
