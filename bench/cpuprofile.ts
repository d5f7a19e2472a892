// Where a V8 CPU profile's time went, as text: self time by part (Loom's own files by
// module, each dependency by package, Node's internals, the engine's garbage collector,
// idle) and by function, and time under chosen frames (inclusive). The control-plane
// benchmark writes one profile per measured run with LOOM_BENCH_CPU_PROFILE=DIR; this reads
// them: `node --import tsx bench/cpuprofile.ts FILE.cpuprofile… [--top 30]`.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** The part of the process a frame belongs to: a package, a Loom module, node, gc, idle. */
export function partOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (functionName === '(idle)') return '(idle)';
  if (functionName === '(garbage collector)') return '(gc)';
  if (functionName === '(program)') return '(program)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const own = /\/(src|bench)\/(.+?)\.[jt]s$/.exec(url);
  if (own) return `${own[1]}/${own[2]}`;
  if (url.startsWith('node:')) return url.replace(/^node:internal\/(deps\/)?/, 'node:').replace(/\/.*$/, '');
  return url === '' ? '(native)' : basename(url);
}

export interface Summary {
  totalMs: number;
  byPart: Map<string, number>;
  byFunction: Map<string, number>;
  /** Inclusive time under frames whose "part function" matches each pattern. */
  under: Map<string, number>;
}

export function summarise(profile: CpuProfile, under: Record<string, RegExp> = {}): Summary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byPart = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const underMs = new Map<string, number>(Object.keys(under).map((k) => [k, 0]));
  const add = (map: Map<string, number>, key: string, ms: number): void => void map.set(key, (map.get(key) ?? 0) + ms);
  let totalMs = 0;
  profile.samples.forEach((id, i) => {
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    totalMs += ms;
    const node = byId.get(id)!;
    const part = partOf(node.callFrame);
    add(byPart, part, ms);
    add(byFunction, `${part} ${node.callFrame.functionName || '(anonymous)'}:${node.callFrame.lineNumber + 1}`, ms);
    if (!Object.keys(under).length) return;
    const hit = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at)!.callFrame;
      const label = `${partOf(f)} ${f.functionName}`;
      for (const [name, pattern] of Object.entries(under)) if (pattern.test(label)) hit.add(name);
    }
    for (const name of hit) add(underMs, name, ms);
  });
  return { totalMs, byPart, byFunction, under: underMs };
}

/** Frames worth knowing the inclusive time of in a control-plane profile. */
export const CONTROL_PLANE_FRAMES: Record<string, RegExp> = {
  'store locate': /^src\/control-plane\/(sqlite|redis)-store locate$/,
  'store heartbeat': /^src\/control-plane\/(sqlite|redis)-store heartbeat$/,
  'zod validation': /^zod /,
  'auth onRequest': /^src\/control-plane\/server (identify|claimedNode)$/,
  'prom-client metrics': /^prom-client /,
  'response serialisation': /^(fast-json-stringify|fastify) (serialize|anonymous0|\$main|serialize\w*)$/,
  'pino logging': /^pino /,
};

function table(title: string, map: Map<string, number>, total: number, top: number): string {
  const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [
    `${title}`,
    ...rows.map(
      ([k, ms]) => `  ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${ms.toFixed(0).padStart(7)} ms  ${k}`,
    ),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
  for (const file of args) {
    const s = summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, CONTROL_PLANE_FRAMES);
    const idle = s.byPart.get('(idle)') ?? 0;
    const busy = s.totalMs - idle;
    s.byPart.delete('(idle)');
    s.byFunction.delete('(idle) (idle):0');
    console.log(`${basename(file)}: ${s.totalMs.toFixed(0)} ms sampled, ${busy.toFixed(0)} ms not idle`);
    console.log(table('self time by part (% of not idle)', s.byPart, busy, top));
    console.log(table('self time by function', s.byFunction, busy, top));
    console.log(table('inclusive', s.under, busy, top));
  }
}
