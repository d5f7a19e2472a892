// `npm run bench [-- scenario...]`: runs the named scenarios (default: all), prints a
// table per scenario and writes the raw figures to bench/results/<timestamp>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheScenarios } from './cache.bench.js';
import { controlPlaneScenarios } from './control-plane.bench.js';
import { fetchScenarios } from './fetch.bench.js';
import { fleetScenarios } from './fleet.bench.js';
import { hubScenarios } from './hub.bench.js';
import { ROOT } from './lib.js';

const scenarios: Record<string, () => Promise<Record<string, unknown>>> = {
  ...fetchScenarios,
  ...cacheScenarios,
  ...controlPlaneScenarios,
  ...fleetScenarios,
  ...hubScenarios,
};

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !(name in scenarios));
if (unknown.length) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };
for (const name of wanted.length ? wanted : Object.keys(scenarios)) {
  console.log(`\n== ${name}`);
  results[name] = await scenarios[name]!();
}
const dir = join(ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
console.log(`\nraw figures: ${file}`);
