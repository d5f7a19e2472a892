// Issue 10's Hub scenario: a repo of 4 LFS files of 512 MiB (LOOM_BENCH_HUB_MIB to shrink)
// and 20 small files on the test Hub, its CDN at 100 ms to first byte and 50 MB/s per
// connection. `loom pull` against the Hub's own JS client on its plain path (files one after
// another, one stream each), both into an HF cache; then a second `loom pull` of the same
// revision. Every run's snapshot is checked byte for byte against the repo. Rounds
// (LOOM_BENCH_ROUNDS, default 3) are interleaved; the table gives medians. And `hub-offline`:
// the CPU of an offline pull of a 2,000-file snapshot.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { TestHub, commitHash, sha256Hex, type TestHubFile } from '../test/support/test-hub.js';
import { DATA_DIR, LOOM_BIN, MiB, ROOT, mbps, median, printTable, ratio, runChecked } from './lib.js';

const BIG = Number(process.env.LOOM_BENCH_HUB_MIB ?? 512) * MiB;
const LATENCY_MS = 100;
const RATE = 50e6;

function repoFiles(): TestHubFile[] {
  const files: TestHubFile[] = [];
  for (let i = 1; i <= 4; i++) {
    files.push({ path: `model-0000${i}-of-00004.safetensors`, bytes: randomBytes(BIG), lfs: true });
  }
  for (let i = 0; i < 20; i++) {
    const path = i < 10 ? `config-${i}.json` : `tokenizer/part-${i}.txt`;
    files.push({ path, bytes: randomBytes(2048 + i * 512), lfs: false });
  }
  return files;
}

function checkSnapshot(dir: string, files: TestHubFile[]): void {
  for (const file of files) {
    const bytes = readFileSync(join(dir, file.path));
    if (sha256Hex(bytes) !== sha256Hex(file.bytes)) throw new Error(`${dir}: ${file.path} differs`);
  }
}

interface Round {
  baselineSeconds: number;
  loomSeconds: number;
  secondPullSeconds: number;
  nodeStartSeconds: number;
  baselineCdnBytes: number;
  loomCdnBytes: number;
  secondPullBytes: number;
  loomPeakRssMiB: number;
  /** CPU seconds (user + system) of each process: what it costs, whatever the load. */
  baselineCpuSeconds: number;
  loomCpuSeconds: number;
  /** CPU seconds of this process (the test Hub and its CDN) while loom pulled. */
  testHubCpuSecondsDuringLoom: number;
  /** 1-minute load average before and after the round (2 cores, shared). */
  load: [number, number];
}

async function hubScenario(): Promise<Record<string, unknown>> {
  const files = repoFiles();
  const total = files.reduce((sum, f) => sum + f.bytes.length, 0);
  const rounds = Number(process.env.LOOM_BENCH_ROUNDS ?? 3);
  const hub = await TestHub.start({
    repos: [{ id: 'bench/big-llm', commits: [{ sha: commitHash('bench'), files }] }],
    hubFirstByteMs: LATENCY_MS,
    cdnFirstByteMs: LATENCY_MS,
    cdnBytesPerSecond: RATE,
  });
  const work = join(DATA_DIR, 'hub');
  const env = { HF_ENDPOINT: hub.endpoint, HF_TOKEN: '', HF_HUB_OFFLINE: '' };
  const samples: Round[] = [];
  try {
    // Interleaved: each round runs the baseline, a cold loom pull and a second pull, so a
    // busy spell on this shared machine falls on all of them alike.
    for (let round = 0; round < rounds; round++) {
      rmSync(work, { recursive: true, force: true });
      mkdirSync(work, { recursive: true });
      const loadBefore = loadavg()[0]!;
      hub.resetStats();
      const baseline = await runChecked(
        process.execPath,
        [
          '--import',
          'tsx',
          join(ROOT, 'bench', 'clients', 'hf-snapshot.ts'),
          hub.endpoint,
          'bench/big-llm',
          join(work, 'js'),
        ],
        env,
      );
      checkSnapshot(baseline.stdout.trim(), files);
      const baselineCdn = hub.stats.cdnBytes;
      rmSync(join(work, 'js'), { recursive: true, force: true });

      const pull = (): Promise<Awaited<ReturnType<typeof runChecked>>> =>
        runChecked(
          process.execPath,
          [LOOM_BIN, 'pull', 'bench/big-llm', '--hf-cache', join(work, 'loom'), '--cache-dir', join(work, 'node')],
          env,
        );
      hub.resetStats();
      const hubCpu = process.cpuUsage();
      const first = await pull();
      const hubCpuUsed = process.cpuUsage(hubCpu);
      checkSnapshot(first.stdout.trim(), files);
      const firstCdn = hub.stats.cdnBytes;
      hub.resetStats();
      const second = await pull();
      checkSnapshot(second.stdout.trim(), files);
      const secondBytes = hub.stats.cdnBytes + hub.stats.hubFileBytes;
      const nodeStart = await runChecked(process.execPath, ['-e', '0']);
      samples.push({
        baselineSeconds: baseline.seconds,
        loomSeconds: first.seconds,
        secondPullSeconds: second.seconds,
        nodeStartSeconds: nodeStart.seconds,
        baselineCdnBytes: baselineCdn,
        loomCdnBytes: firstCdn,
        secondPullBytes: secondBytes,
        loomPeakRssMiB: Math.round(first.peakRssKiB / 1024),
        baselineCpuSeconds: baseline.cpuSeconds,
        loomCpuSeconds: first.cpuSeconds,
        testHubCpuSecondsDuringLoom: (hubCpuUsed.user + hubCpuUsed.system) / 1e6,
        load: [loadBefore, loadavg()[0]!],
      });
      const last = samples.at(-1)!;
      console.log(
        `round ${round + 1}/${rounds}: baseline ${last.baselineSeconds.toFixed(2)} s, loom ${last.loomSeconds.toFixed(2)} s (${ratio(last.baselineSeconds, last.loomSeconds)}; CPU ${last.baselineCpuSeconds.toFixed(1)} s / ${last.loomCpuSeconds.toFixed(1)} s), again ${last.secondPullSeconds.toFixed(2)} s, node -e 0 ${last.nodeStartSeconds.toFixed(2)} s, load ${last.load.map((l) => l.toFixed(1)).join(' -> ')}`,
      );
    }
    const med = (pick: (r: Round) => number): number => median(samples.map(pick));
    const baselineSeconds = med((r) => r.baselineSeconds);
    const loomSeconds = med((r) => r.loomSeconds);
    const secondPullSeconds = med((r) => r.secondPullSeconds);
    const rows = [
      {
        run: `@huggingface/hub snapshotDownload (sequential, 1 stream/file), median of ${rounds}`,
        seconds: baselineSeconds.toFixed(2),
        'MB/s': mbps(total, baselineSeconds),
        'CDN bytes': samples[0]!.baselineCdnBytes,
      },
      {
        run: `loom pull (cold), median of ${rounds}`,
        seconds: loomSeconds.toFixed(2),
        'MB/s': mbps(total, loomSeconds),
        'CDN bytes': samples[0]!.loomCdnBytes,
      },
      {
        run: `loom pull again (same revision), median of ${rounds}`,
        seconds: secondPullSeconds.toFixed(2),
        'MB/s': '-',
        'CDN bytes': samples[0]!.secondPullBytes,
      },
    ];
    printTable(
      `Hub pull: 4 x ${BIG / MiB} MiB + 20 small files, ${LATENCY_MS} ms first byte, ${RATE / 1e6} MB/s per connection`,
      rows,
    );
    console.log(`\nloom pull vs the sequential client: ${ratio(baselineSeconds, loomSeconds)} faster (medians)`);
    return {
      bigFileMiB: BIG / MiB,
      totalBytes: total,
      rounds,
      baselineSeconds,
      loomSeconds,
      speedup: baselineSeconds / loomSeconds,
      secondPullSeconds,
      nodeStartSeconds: med((r) => r.nodeStartSeconds),
      baselineCpuSeconds: med((r) => r.baselineCpuSeconds),
      loomCpuSeconds: med((r) => r.loomCpuSeconds),
      samples,
      rows,
    };
  } finally {
    await hub.close();
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * An offline pull (HF_HUB_OFFLINE) of a snapshot of 2,000 small files already in the HF
 * cache, in this process: the CPU time of each pull (user + system, median of 15), which the
 * machine's load changes far less than the wall time. Every pointer is resolved and checked
 * to lead into the repo's folder (hf-layout.ts resolvePointer).
 */
async function hubOfflineScenario(): Promise<Record<string, unknown>> {
  const { pullRepo } = await import('../src/hub/pull.js');
  const { HfRepoCache } = await import('../src/cache/hf-layout.js');
  const hubCache = join(DATA_DIR, 'hub-offline-bench');
  rmSync(hubCache, { recursive: true, force: true });
  const FILES = 2000;
  const commit = 'a'.repeat(40);
  const repo = new HfRepoCache(hubCache, 'model', 'bench/many-files');
  mkdirSync(join(repo.dir, 'blobs'), { recursive: true });
  mkdirSync(join(repo.dir, 'refs'), { recursive: true });
  writeFileSync(join(repo.dir, 'refs', 'main'), commit);
  for (let i = 0; i < FILES; i++) {
    const etag = createHash('sha1').update(String(i)).digest('hex');
    writeFileSync(join(repo.dir, 'blobs', etag), `file ${i}\n`);
    const pointer = repo.pointerPath(commit, `part-${i % 20}/file-${i}.json`);
    mkdirSync(dirname(pointer), { recursive: true });
    symlinkSync(join('..', '..', '..', 'blobs', etag), pointer);
  }
  const cpuMs: number[] = [];
  const wallMs: number[] = [];
  for (let round = 0; round < 15; round++) {
    const cpu = process.cpuUsage();
    const wall = performance.now();
    const pulled = await pullRepo({ repo: 'bench/many-files', hubCache, offline: true, env: {} });
    wallMs.push(performance.now() - wall);
    const used = process.cpuUsage(cpu);
    cpuMs.push((used.user + used.system) / 1000);
    if (pulled.files.length !== FILES) throw new Error(`offline pull found ${pulled.files.length} of ${FILES} files`);
  }
  rmSync(hubCache, { recursive: true, force: true });
  const row = {
    files: FILES,
    'CPU ms (median)': Math.round(median(cpuMs)),
    'wall ms (median)': Math.round(median(wallMs)),
  };
  printTable('offline pull of 2,000 files (HF_HUB_OFFLINE)', [row]);
  return { ...row, cpuMs, wallMs, load: loadavg() };
}

export const hubScenarios = {
  hub: () => hubScenario(),
  'hub-offline': () => hubOfflineScenario(),
};
