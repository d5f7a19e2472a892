// Benchmark plumbing: data files, timing whole commands, peak RSS, medians and tables.
// Every figure a scenario prints is a ratio against a baseline timed in the same run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, writeSync, statSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

export const ROOT = resolve(import.meta.dirname, '..');
export const DATA_DIR = process.env.LOOM_BENCH_DIR ?? join(ROOT, '.bench-data');
export const LOOM_BIN = join(ROOT, 'bin', 'loom.cjs');
export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** A file of `size` random-looking bytes, made once and reused between runs. */
export function dataFile(name: string, size: number): string {
  mkdirSync(DATA_DIR, { recursive: true });
  const path = join(DATA_DIR, name);
  if (existsSync(path) && statSync(path).size === size) return path;
  const block = randomBytes(16 * MiB);
  const fd = openSync(path, 'w');
  try {
    for (let at = 0; at < size; at += block.length) {
      // A counter in each block keeps blocks distinct without generating gigabytes of entropy.
      block.writeBigUInt64BE(BigInt(at), 0);
      writeSync(fd, block, 0, Math.min(block.length, size - at), at);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/**
 * Thrown by a scenario that cannot run here (a tool not installed): `npm run bench` reports
 * it as skipped and goes on, rather than failing the whole run.
 */
export class BenchSkipped extends Error {
  readonly code = 'LOOM_BENCH_SKIPPED';
  constructor(reason: string) {
    super(reason);
    this.name = 'BenchSkipped';
  }
}

/** Skips the calling scenario when `name` is not on the PATH; `install` says how to get it. */
export function requireCommand(name: string, install: string): void {
  if (!hasCommand(name)) throw new BenchSkipped(`${name} is not installed (${install})`);
}

export interface CommandRun {
  seconds: number;
  /** Peak resident set size in KiB: the kernel's ru_maxrss (GNU time), else sampled VmHWM. */
  peakRssKiB: number;
  /** CPU seconds of the process and its children, from wait4's rusage; undefined without GNU time. */
  userSeconds: number | undefined;
  systemSeconds: number | undefined;
  /** User + system CPU seconds: the rusage's, else sampled from /proc every 20 ms (a little low). */
  cpuSeconds: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** GNU time reports the rusage the kernel keeps for a child (Node cannot read it). */
const GNU_TIME = '/usr/bin/time';
const hasGnuTime = existsSync(GNU_TIME);
let timeFiles = 0;

/** Runs a command to completion, timing it and taking its CPU seconds and peak RSS. */
export function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandRun> {
  const timeFile = hasGnuTime ? join(tmpdir(), `loom-bench-time-${process.pid}-${timeFiles++}`) : undefined;
  const [file, argv] = timeFile ? [GNU_TIME, ['-f', '%U %S %M', '-o', timeFile, command, ...args]] : [command, args];
  return new Promise((resolvePromise, reject) => {
    const started = performance.now();
    const child = spawn(file, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let peak = 0;
    let cpuTicks = 0;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const sample = (): void => {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        const hwm = /VmHWM:\s+(\d+)/.exec(status);
        if (hwm) peak = Math.max(peak, Number(hwm[1]));
        // Fields 14 and 15 of /proc/PID/stat, after the command name in parentheses.
        const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        cpuTicks = Math.max(cpuTicks, Number(fields[11]) + Number(fields[12]));
      } catch {
        /* exited */
      }
    };
    const timer = setInterval(sample, 20);
    child.on('error', reject);
    child.on('exit', () => sample());
    child.on('close', (code) => {
      clearInterval(timer);
      const seconds = (performance.now() - started) / 1000;
      const rusage = timeFile ? readRusage(timeFile) : undefined;
      resolvePromise({
        seconds,
        peakRssKiB: rusage?.maxRssKiB ?? peak,
        userSeconds: rusage?.user,
        systemSeconds: rusage?.system,
        // Clock ticks are 1/100 s on Linux.
        cpuSeconds: rusage ? rusage.user + rusage.system : cpuTicks / 100,
        code,
        stdout,
        stderr,
      });
    });
  });
}

/** The last line GNU time wrote: user and system seconds and the peak RSS in KiB. */
function readRusage(file: string): { user: number; system: number; maxRssKiB: number } | undefined {
  try {
    const line = readFileSync(file, 'utf8').trim().split('\n').pop() ?? '';
    const [user, system, maxRssKiB] = line.split(' ').map(Number);
    if (![user, system, maxRssKiB].every((n) => Number.isFinite(n))) return undefined;
    return { user: user!, system: system!, maxRssKiB: maxRssKiB! };
  } catch {
    return undefined;
  } finally {
    rmSync(file, { force: true });
  }
}

/** CPU seconds (user + system) of a run, per GiB moved; undefined without GNU time. */
export function cpuPerGiB(run: CommandRun, bytes: number): number | undefined {
  if (run.userSeconds === undefined || run.systemSeconds === undefined) return undefined;
  return (run.userSeconds + run.systemSeconds) / (bytes / GiB);
}

/** The 1, 5 and 15 minute load averages: how busy the shared machine was. */
export function loadAverage(): number[] {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
}

export async function runChecked(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandRun> {
  const run = await runCommand(command, args, env);
  if (run.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${run.code}: ${run.stderr.slice(0, 500)}`);
  return run;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Runs `measure` `times` times, alternating with the others by the caller, and keeps every sample. */
export async function repeat<T>(times: number, measure: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < times; i++) out.push(await measure());
  return out;
}

export function printTable(title: string, rows: Array<Record<string, string | number>>): void {
  if (rows.length === 0) return;
  const headers = Object.keys(rows[0]!);
  const widths = headers.map((h) => Math.max(h.length, ...rows.map((r) => String(r[h]).length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n### ${title}\n`);
  console.log(line(headers));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const row of rows) console.log(line(headers.map((h) => String(row[h]))));
}

export const mbps = (bytes: number, seconds: number): number => Math.round(bytes / 1e6 / seconds);
export const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;
