// `npm run bench [-- scenario...]`: runs the named scenarios (default: all; `--list` names
// them), prints a Markdown table per scenario and writes each one's figures, with the
// machine's description, to bench/results/<scenario>-<start time>.json. A scenario whose
// tool is not installed is reported as skipped; one that fails does not stop the others,
// but makes the run exit 1. After a sweep, the charts are drawn again from its JSON.
import { relative } from 'node:path';
import { cacheScenarios } from './cache.bench.js';
import { CHARTS, renderCharts } from './charts.js';
import { controlPlaneScenarios } from './control-plane.bench.js';
import { fetchScenarios } from './fetch.bench.js';
import { fleetScenarios } from './fleet.bench.js';
import { fleetSweepScenarios } from './fleet-sweep.bench.js';
import { hubScenarios } from './hub.bench.js';
import { BenchSkipped, ROOT, printTable } from './lib.js';
import { describeMachine, loadAverage } from './machine.js';
import { writeResult } from './results.js';
import { workersSweepScenarios } from './workers-sweep.bench.js';

const scenarios: Record<string, () => Promise<object>> = {
  ...fetchScenarios,
  ...cacheScenarios,
  ...controlPlaneScenarios,
  ...fleetScenarios,
  ...hubScenarios,
  ...workersSweepScenarios,
  ...fleetSweepScenarios,
};

const wanted = process.argv.slice(2);
if (wanted.includes('--list')) {
  console.log(Object.keys(scenarios).join('\n'));
  process.exit(0);
}
const unknown = wanted.filter((name) => !(name in scenarios));
if (unknown.length) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}

/** The LOOM_BENCH_* settings of this run, so the recorded command makes the same figures. */
function command(scenario: string): string {
  const env = Object.entries(process.env)
    .filter(([k]) => k.startsWith('LOOM_BENCH_'))
    .map(([k, v]) => `${k}=${v} `)
    .join('');
  return `${env}npm run bench -- ${scenario}`;
}

const machine = describeMachine();
const missing = Object.entries(machine.tools)
  .filter(([, version]) => version === null)
  .map(([tool]) => tool);
console.log(
  `machine: ${machine.cpuCount} x ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}`,
);
if (missing.length) console.log(`not installed (what needs them is skipped): ${missing.join(', ')}`);

const summary: Array<Record<string, string>> = [];
let failed = false;
for (const name of wanted.length ? wanted : Object.keys(scenarios)) {
  console.log(`\n== ${name}`);
  const startedAt = new Date().toISOString();
  const loadAverageStart = loadAverage();
  const started = performance.now();
  const took = (): string => ((performance.now() - started) / 1000).toFixed(0);
  try {
    const result = await scenarios[name]!();
    const path = writeResult({
      scenario: name,
      command: command(name),
      startedAt,
      finishedAt: new Date().toISOString(),
      machine: { ...machine, loadAverageStart, loadAverageEnd: loadAverage() },
      result,
    });
    summary.push({ scenario: name, outcome: 'done', seconds: took(), figures: relative(ROOT, path) });
  } catch (error) {
    if (error instanceof BenchSkipped) {
      console.log(`skipped: ${error.message}`);
      summary.push({ scenario: name, outcome: `skipped: ${error.message}`, seconds: took(), figures: '-' });
    } else {
      failed = true;
      console.error(error);
      summary.push({
        scenario: name,
        outcome: `FAILED: ${String(error).split('\n')[0]}`,
        seconds: took(),
        figures: '-',
      });
    }
  }
}
printTable('Scenarios run', summary);

const swept = Object.keys(CHARTS).filter((scenario) =>
  summary.some((s) => s.scenario === scenario && s.outcome === 'done'),
);
if (swept.length) {
  for (const path of await renderCharts(swept)) console.log(`chart: ${relative(ROOT, path)}`);
}
process.exit(failed ? 1 : 0);
