// `npm run charts [-- result.json...]`: the README's SVG charts, drawn with Vega-Lite (rendered
// headless, no canvas) from the JSON the sweeps wrote to bench/results/, without running any
// benchmark. By default each chart takes its scenario's newest document; named files take
// precedence. `npm run bench -- workers-sweep fleet-sweep` draws them again after running.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { FleetSample, FleetSweepResult } from './fleet-sweep.bench.js';
import { MiB, ROOT, median } from './lib.js';
import { RESULTS_DIR, latestResult, readResult, type ResultDocument } from './results.js';
import type { WorkersSample, WorkersSweepResult } from './workers-sweep.bench.js';

export const CHARTS_DIR = join(RESULTS_DIR, 'charts');

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

/** A spec that can stand in a concatenation (vega-lite names this type only deep inside). */
type Panel = Extract<TopLevelSpec, { hconcat: unknown }>['hconcat'][number];

/**
 * Where and when the figures were taken: a chart read without its JSON still says so. Lines
 * are kept short because without a canvas Vega overestimates text width and would widen the
 * picture to fit.
 */
function provenance(doc: ResultDocument, rounds: number): string[] {
  const m = doc.machine;
  return [
    `${doc.startedAt.slice(0, 10)}, median of ${rounds} round${rounds === 1 ? '' : 's'} (bars: min to max)`,
    `${m.cpuCount} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ` +
      `load average ${m.loadAverageStart[0]} → ${m.loadAverageEnd[0]}`,
  ];
}

interface Point {
  series: string;
  x: number;
  median: number;
  min: number;
  max: number;
}

function summarize(series: string, x: number, values: number[]): Point {
  return { series, x, median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** One line per series with its min-to-max bar at each x; x on a log-2 axis at `ticks`. */
function linesWithRanges(
  points: Point[],
  opts: { ticks: number[]; xTitle: string; yTitle: string; dashed?: string; title?: string },
): Panel {
  const series = [...new Set(points.map((p) => p.series))];
  return {
    ...(opts.title !== undefined && { title: opts.title }),
    width: 360,
    height: 260,
    data: { values: points },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        scale: { type: 'log', base: 2, domain: [opts.ticks[0]! / 1.15, opts.ticks.at(-1)! * 1.15] },
        axis: { values: opts.ticks, format: 'd', title: opts.xTitle, grid: false },
      },
      color: {
        field: 'series',
        type: 'nominal',
        sort: series,
        title: null,
        legend: { orient: 'bottom', direction: 'vertical', labelLimit: 400, symbolType: 'stroke' },
      },
    },
    layer: [
      {
        mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.6 },
        encoding: { y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } },
      },
      {
        mark: { type: 'line', point: true, strokeWidth: 2 },
        encoding: {
          y: { field: 'median', type: 'quantitative', title: opts.yTitle, scale: { zero: true } },
          strokeDash: {
            field: 'series',
            type: 'nominal',
            sort: series,
            legend: null,
            scale: { domain: series, range: series.map((s) => (s === opts.dashed ? [6, 4] : [1, 0])) },
          },
        },
      },
    ],
  };
}

function workersChart(doc: ResultDocument<WorkersSweepResult>): TopLevelSpec {
  const r = doc.result;
  const labels: Record<WorkersSample['client'], string> = {
    loom: 'loom fetch --workers N',
    aria2c: 'aria2c -x N -s N (-x stops at 16)',
    sequential: 'one connection (curl), the sequential case',
  };
  const of = (client: WorkersSample['client'], workers?: number): number[] =>
    r.samples
      .filter((s) => s.client === client && (workers === undefined || s.workers === workers))
      .map((s) => s.mbPerSecond);
  const points: Point[] = [];
  for (const client of ['loom', 'aria2c'] as const) {
    for (const workers of r.workerCounts) {
      const values = of(client, workers);
      if (values.length) points.push(summarize(labels[client], workers, values));
    }
  }
  // The sequential case has no worker count: drawn flat across, as the line to beat.
  for (const workers of r.workerCounts) points.push(summarize(labels.sequential, workers, of('sequential')));
  const spec = linesWithRanges(points, {
    ticks: r.workerCounts,
    xTitle: 'workers (connections in flight)',
    yTitle: 'MB/s',
    dashed: labels.sequential,
  });
  return {
    $schema: SCHEMA,
    ...spec,
    width: 560,
    height: 320,
    title: {
      text: `Throughput against workers: ${r.sizeBytes / MiB} MiB from an object-store-like origin`,
      subtitle: [
        `${r.origin.firstByteLatencyMs} ms to first byte, ${r.origin.rateLimitBytesPerSecond / 1e6} MB/s per connection`,
        'whole-process time; loom at its defaults (cache on) but --workers',
        ...provenance(doc, r.rounds),
      ],
      anchor: 'start',
      offset: 14,
    },
    // The panel's data is set; the union type loses that through the spread.
  } as TopLevelSpec;
}

function fleetChart(doc: ResultDocument<FleetSweepResult>): TopLevelSpec {
  const r = doc.result;
  const label = (peers: boolean): string =>
    peers ? 'loom with peers (agents + control plane)' : 'no control plane: every node from the origin';
  const points = (value: (s: FleetSample) => number): Point[] =>
    [false, true].flatMap((peers) =>
      r.fleetSizes.map((nodes) =>
        summarize(label(peers), nodes, r.samples.filter((s) => s.nodes === nodes && s.peers === peers).map(value)),
      ),
    );
  const o = r.origin;
  const panel = (title: string, yTitle: string, value: (s: FleetSample) => number): Panel =>
    linesWithRanges(points(value), { ticks: r.fleetSizes, xTitle: 'nodes starting at once', yTitle, title });
  const bytes = panel('Bytes the origin served', 'origin bytes / file size', (s) => s.originBytes / r.sizeBytes);
  const time = panel('Time until every node is ready', 'seconds (last verified copy)', (s) => s.seconds);
  return {
    $schema: SCHEMA,
    title: {
      text: `Fleet cold start: ${r.sizeBytes / MiB} MiB to every node against fleet size`,
      subtitle: [
        `origin: ${o.firstByteLatencyMs} ms to first byte, ${o.rateLimitBytesPerSecond / 1e6} MB/s per connection, ` +
          `${o.aggregateRateLimitBytesPerSecond / 1e6} MB/s in all`,
        'each node: a loom fetch process, with peers also a loom agent',
        ...provenance(doc, r.rounds),
      ],
      anchor: 'start',
      offset: 14,
    },
    hconcat: [bytes, time],
    resolve: { scale: { color: 'shared', strokeDash: 'shared' } },
  };
}

/** The charts, by the scenario whose JSON they are drawn from. */
export const CHARTS: Record<string, { file: string; spec: (doc: ResultDocument) => TopLevelSpec }> = {
  'workers-sweep': {
    file: 'workers-sweep.svg',
    spec: (doc) => workersChart(doc as ResultDocument<WorkersSweepResult>),
  },
  'fleet-sweep': { file: 'fleet-sweep.svg', spec: (doc) => fleetChart(doc as ResultDocument<FleetSweepResult>) },
};

export async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * Draws the charts of `scenarios` into `outDir`, each from `docs[scenario]` or else its
 * newest document; returns the SVG files written.
 */
export async function renderCharts(
  scenarios: string[] = Object.keys(CHARTS),
  docs: Record<string, ResultDocument> = {},
  outDir = CHARTS_DIR,
): Promise<string[]> {
  mkdirSync(outDir, { recursive: true });
  const written: string[] = [];
  for (const scenario of scenarios) {
    const chart = CHARTS[scenario]!;
    const doc = docs[scenario] ?? latestResult(scenario)?.doc;
    if (!doc) {
      console.log(`${scenario}: no results in ${relative(ROOT, RESULTS_DIR)}/ (npm run bench -- ${scenario})`);
      continue;
    }
    const path = join(outDir, chart.file);
    writeFileSync(path, `${await toSvg(chart.spec(doc))}\n`);
    written.push(path);
  }
  return written;
}

if (import.meta.url === pathToFileURL(resolve(process.argv[1] ?? '')).href) {
  const docs: Record<string, ResultDocument> = {};
  for (const file of process.argv.slice(2)) {
    const doc = readResult(resolve(file));
    if (!(doc.scenario in CHARTS)) {
      console.error(`${file}: no chart is drawn from ${doc.scenario}; charts: ${Object.keys(CHARTS).join(', ')}`);
      process.exit(2);
    }
    docs[doc.scenario] = doc;
  }
  const scenarios = Object.keys(docs).length ? Object.keys(docs) : Object.keys(CHARTS);
  for (const path of await renderCharts(scenarios, docs)) console.log(`chart: ${relative(ROOT, path)}`);
}
