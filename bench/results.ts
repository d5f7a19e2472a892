// bench/results/: one JSON document per scenario run, with the machine it ran on and the
// command that made it, so a table or chart can be traced back and redrawn without rerunning.
import { readdirSync, readFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './lib.js';
import type { LoadAverage, Machine } from './machine.js';

export const RESULTS_DIR = join(ROOT, 'bench', 'results');

export interface ResultDocument<T = unknown> {
  scenario: string;
  /** How to make it again, environment included. */
  command: string;
  startedAt: string;
  finishedAt: string;
  machine: Machine & { loadAverageStart: LoadAverage; loadAverageEnd: LoadAverage };
  result: T;
}

/** Writes `doc` as bench/results/<scenario>-<start time>.json; returns the path. */
export function writeResult(doc: ResultDocument): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${doc.scenario}-${doc.startedAt.replace(/[:.]/g, '-')}.json`);
  // Through a temporary name: a run stopped mid-write leaves no half document to be charted.
  writeFileSync(`${path}.tmp`, `${JSON.stringify(doc, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
  return path;
}

export function readResult(path: string): ResultDocument {
  const doc = JSON.parse(readFileSync(path, 'utf8')) as Partial<ResultDocument>;
  if (typeof doc.scenario !== 'string' || typeof doc.startedAt !== 'string' || doc.result === undefined) {
    throw new Error(`${path} is not a result document of \`npm run bench\` (no scenario, startedAt or result)`);
  }
  return doc as ResultDocument;
}

/** The newest document of `scenario` in bench/results/ (older layouts are passed over), if any. */
export function latestResult(scenario: string): { path: string; doc: ResultDocument } | undefined {
  let latest: { path: string; doc: ResultDocument } | undefined;
  for (const name of readdirSync(RESULTS_DIR)) {
    if (!name.startsWith(`${scenario}-`) || !name.endsWith('.json')) continue;
    const path = join(RESULTS_DIR, name);
    let doc: ResultDocument;
    try {
      doc = readResult(path);
    } catch {
      continue;
    }
    if (doc.scenario === scenario && (!latest || doc.startedAt > latest.doc.startedAt)) latest = { path, doc };
  }
  return latest;
}
