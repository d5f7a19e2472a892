// A fleet's heartbeats as the control plane sees them: `nodes` nodes each beating every
// `intervalMs`, spread evenly over the interval (so 10,000 nodes every 10 s are 1,000 PUTs
// a second), from a process of its own so its CPU is not the control plane's. Runs until
// SIGTERM, then prints one line: "LOOM_HEARTBEATS sent ok failed p99us seconds".
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

const [url, nodesText, intervalText, zonesText] = process.argv.slice(2) as [string, string, string, string];
const nodes = Number(nodesText);
const intervalMs = Number(intervalText);
const zones = zonesText.split(',');
const TICK_MS = 20;

const pool = new Pool(url, { connections: 4 });
const latencies: number[] = [];
let sent = 0;
let ok = 0;
let failed = 0;
let next = 0;
const started = performance.now();

function beat(i: number): void {
  sent++;
  const at = performance.now();
  pool
    .request({
      path: `/v1/nodes/node-${i}`,
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        url: `http://10.${i >> 8}.${i & 255}.1:7071`,
        zone: zones[i % zones.length],
        // Load moves as uploads start and end: locate's ranking sees it change.
        freeUploadSlots: Math.floor(Math.random() * 8),
      }),
    })
    .then(async (res) => {
      await res.body.dump();
      if (res.statusCode === 200) ok++;
      else failed++;
      latencies.push(performance.now() - at);
    })
    .catch(() => failed++);
}

const timer = setInterval(() => {
  // Keeps to the schedule by elapsed time, so a late tick sends what the interval owes.
  const target = Math.floor(((performance.now() - started) / intervalMs) * nodes);
  while (sent < target) {
    beat(next);
    next = (next + 1) % nodes;
  }
}, TICK_MS);
process.stdout.write('LOOM_HEARTBEATS_RUNNING\n');

process.on('SIGTERM', () => {
  clearInterval(timer);
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const p99 = latencies.length ? latencies[Math.floor(latencies.length * 0.99)]! : 0;
  process.stdout.write(`LOOM_HEARTBEATS ${sent} ${ok} ${failed} ${Math.round(p99 * 1000)} ${seconds.toFixed(2)}\n`);
  void pool.close().finally(() => process.exit(0));
});
