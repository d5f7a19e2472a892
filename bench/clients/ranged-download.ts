// One process, one HTTP client, 16 ranged requests at once for a whole file, bytes
// discarded: how fast each client moves bytes here, so the engine's client is picked by
// numbers (run as a child process by the client-comparison scenario).
import http from 'node:http';
import { Pool } from 'undici';

const [client, url, sizeText, workersText] = process.argv.slice(2) as [string, string, string, string];
const size = Number(sizeText);
const workers = Number(workersText);
const share = Math.ceil(size / workers);
const ranges = Array.from({ length: workers }, (_, i) => [i * share, Math.min(size, (i + 1) * share) - 1] as const);

async function viaNodeHttp(): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: workers });
  const counts = await Promise.all(
    ranges.map(
      ([start, end]) =>
        new Promise<number>((resolve, reject) => {
          http
            .get(url, { agent, headers: { range: `bytes=${start}-${end}` } }, (res) => {
              let n = 0;
              res.on('data', (chunk: Buffer) => (n += chunk.length));
              res.on('end', () => resolve(n));
              res.on('error', reject);
            })
            .on('error', reject);
        }),
    ),
  );
  agent.destroy();
  return counts.reduce((a, b) => a + b, 0);
}

async function viaUndici(): Promise<number> {
  const target = new URL(url);
  const pool = new Pool(target.origin, { connections: workers });
  const counts = await Promise.all(
    ranges.map(async ([start, end]) => {
      const { body } = await pool.request({
        path: target.pathname,
        method: 'GET',
        headers: { range: `bytes=${start}-${end}` },
      });
      let n = 0;
      for await (const chunk of body) n += (chunk as Buffer).length;
      return n;
    }),
  );
  await pool.close();
  return counts.reduce((a, b) => a + b, 0);
}

const started = performance.now();
const bytes = client === 'undici' ? await viaUndici() : await viaNodeHttp();
if (bytes !== size) throw new Error(`${client} received ${bytes} of ${size} bytes`);
// The transfer alone: tsx's start-up is not the client's cost.
process.stdout.write(`${((performance.now() - started) / 1000).toFixed(4)}\n`);
