// What machine a benchmark ran on, written beside its figures: the figures of a shared
// 2-core VM mean little without its CPU model, its memory and how loaded it was meanwhile.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface Machine {
  os: string;
  kernel: string;
  arch: string;
  cpuModel: string;
  cpuCount: number;
  memoryGiB: number;
  node: string;
  /** The version line of each outside tool a scenario may race against; null when not installed. */
  tools: Record<string, string | null>;
}

/** 1, 5 and 15 minute load averages. */
export type LoadAverage = [number, number, number];

const TOOLS: Record<string, string[]> = {
  aria2c: ['--version'],
  curl: ['--version'],
  nginx: ['-v'],
  wrk: ['--version'],
};

function toolVersion(command: string, args: string[]): string | null {
  const run = spawnSync(command, args, { encoding: 'utf8' });
  if (run.error) return null;
  // nginx prints its version on stderr, wrk exits 1 after printing it.
  const first = `${run.stdout}\n${run.stderr}`.split('\n').find((line) => line.trim() !== '');
  return first?.trim() ?? null;
}

/** The distribution's name where the system says it (os.version() is only the kernel's build). */
function distribution(): string {
  try {
    const name = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'));
    if (name) return name[1]!;
  } catch {
    /* not Linux, or no os-release */
  }
  return os.type();
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    os: distribution(),
    kernel: os.release(),
    arch: os.arch(),
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpuCount: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    tools: Object.fromEntries(Object.entries(TOOLS).map(([name, args]) => [name, toolVersion(name, args)])),
  };
}

export function loadAverage(): LoadAverage {
  const [one, five, fifteen] = os.loadavg().map((v) => Math.round(v * 100) / 100);
  return [one!, five!, fifteen!];
}

/** One line for a chart's caption or a table's title. */
export function machineLine(machine: Machine): string {
  return `${machine.cpuCount} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}`;
}
