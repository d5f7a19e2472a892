// `npm run bench` and `npm run charts`: the charts are drawn from result documents alone (no
// benchmark runs), carry every series and the machine they were measured on, and a scenario
// whose tool is not installed is reported as skipped instead of failing the run.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { renderCharts } from '../../bench/charts.js';
import type { FleetSample, FleetSweepResult } from '../../bench/fleet-sweep.bench.js';
import { MiB } from '../../bench/lib.js';
import { describeMachine } from '../../bench/machine.js';
import { RESULTS_DIR, type ResultDocument } from '../../bench/results.js';
import type { WorkersSample, WorkersSweepResult } from '../../bench/workers-sweep.bench.js';
import { REPO_ROOT, collect, tempDir } from '../helpers/fixtures.js';

function document<T>(scenario: string, result: T): ResultDocument<T> {
  return {
    scenario,
    command: `npm run bench -- ${scenario}`,
    startedAt: '2026-11-28T08:00:00.000Z',
    finishedAt: '2026-11-28T08:02:00.000Z',
    machine: {
      ...describeMachine(),
      cpuModel: 'Test CPU 9000',
      loadAverageStart: [1.5, 1, 1],
      loadAverageEnd: [2.5, 1, 1],
    },
    result,
  };
}

function workersDoc(): ResultDocument<WorkersSweepResult> {
  const samples: WorkersSample[] = [];
  for (let round = 0; round < 3; round++) {
    samples.push({ client: 'sequential', workers: 1, round, seconds: 5.5, mbPerSecond: 49 });
    for (const workers of [1, 2, 4, 8, 16, 32]) {
      samples.push({ client: 'loom', workers, round, seconds: 1, mbPerSecond: 40 * workers + round });
      samples.push({ client: 'aria2c', workers, round, seconds: 1, mbPerSecond: 30 * workers + round });
    }
  }
  return document('workers-sweep', {
    sizeBytes: 256 * MiB,
    origin: { firstByteLatencyMs: 100, rateLimitBytesPerSecond: 50e6 },
    rounds: 3,
    workerCounts: [1, 2, 4, 8, 16, 32],
    commands: { loom: 'loom', aria2c: 'aria2c', sequential: 'curl' },
    skipped: [],
    samples,
    rows: [],
  });
}

function fleetDoc(): ResultDocument<FleetSweepResult> {
  const size = 128 * MiB;
  const samples: FleetSample[] = [];
  for (const nodes of [1, 2, 4, 8]) {
    for (const peers of [false, true]) {
      samples.push({
        nodes,
        peers,
        round: 0,
        seconds: peers ? 3 : 2 * nodes,
        originBytes: peers ? size : nodes * size,
        nodeSeconds: [],
      });
    }
  }
  return document('fleet-sweep', {
    sizeBytes: size,
    origin: { firstByteLatencyMs: 100, rateLimitBytesPerSecond: 25e6, aggregateRateLimitBytesPerSecond: 100e6 },
    rounds: 1,
    fleetSizes: [1, 2, 4, 8],
    samples,
    rows: [],
  });
}

describe('npm run charts', () => {
  it('draws the throughput and fleet charts as SVG from result documents alone', async () => {
    const dir = tempDir();
    const written = await renderCharts(
      ['workers-sweep', 'fleet-sweep'],
      { 'workers-sweep': workersDoc(), 'fleet-sweep': fleetDoc() },
      dir,
    );
    assert.deepEqual(
      written.map((p) => p.slice(dir.length + 1)),
      ['workers-sweep.svg', 'fleet-sweep.svg'],
    );

    const workers = readFileSync(join(dir, 'workers-sweep.svg'), 'utf8');
    assert.match(workers, /^<svg [^>]*width="\d+" height="\d+"/);
    for (const text of [
      'Throughput against workers: 256 MiB',
      'loom fetch --workers N',
      'aria2c -x N -s N',
      'one connection (curl), the sequential case',
      `${describeMachine().cpuCount} × Test CPU 9000`,
      'load average 1.5 → 2.5',
      'median of 3 rounds',
    ]) {
      assert.ok(workers.includes(text), `the workers chart says "${text}"`);
    }
    // Every worker count is a tick, and the y axis reaches loom's best median (40 * 32 + 1).
    for (const tick of ['>1<', '>2<', '>4<', '>8<', '>16<', '>32<', '>1,200<']) assert.ok(workers.includes(tick), tick);
    assert.equal((workers.match(/mark-line role-mark/g) ?? []).length, 3, 'a line for each of three series');
    assert.doesNotMatch(workers, /NaN|undefined|Infinity/);

    const fleet = readFileSync(join(dir, 'fleet-sweep.svg'), 'utf8');
    for (const text of [
      'Fleet cold start: 128 MiB',
      'Bytes the origin served',
      'Time until every node is ready',
      'loom with peers (agents + control plane)',
      'no control plane: every node from the origin',
      '25 MB/s per connection, 100 MB/s in all',
    ]) {
      assert.ok(fleet.includes(text), `the fleet chart says "${text}"`);
    }
    assert.equal((fleet.match(/mark-line role-mark/g) ?? []).length, 4, 'two lines in each of two panels');
    assert.doesNotMatch(fleet, /NaN|undefined|Infinity/);
  });
});

describe('npm run bench', () => {
  it('reports a scenario whose tool is not installed as skipped and writes no figures for it', async () => {
    // A PATH with node and sh only: no nginx, whatever this machine has.
    const bin = tempDir();
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const before = readdirSync(RESULTS_DIR);
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', 'fetch-loopback'], {
      cwd: REPO_ROOT,
      env: { ...process.env, PATH: bin },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const run = await collect(child);
    const out = run.stdout + run.stderr;
    assert.equal(run.code, 0, out);
    assert.match(out, /not installed \(what needs them is skipped\): .*nginx/);
    assert.match(out, /\| fetch-loopback +\| skipped: nginx is not installed \(apt-get install nginx-light\) +\|/);
    assert.deepEqual(readdirSync(RESULTS_DIR), before);
  });
});
