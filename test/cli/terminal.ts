// Runs `loom` on a pseudo-terminal (util-linux `script`) and reads back what it drew: every
// frame of the progress bar (text between a carriage return and an erase-to-end-of-line) and
// the screen a person would see at the end (carriage returns, erases and newlines applied).
/* eslint-disable no-control-regex -- a terminal's control characters are what this reads */
import { spawn, type ChildProcess } from 'node:child_process';
import { LOOM_BIN } from '../helpers/fixtures.js';

export interface TerminalRun {
  child: ChildProcess;
  /** Everything written to the terminal so far. */
  output(): string;
  done: Promise<{ code: number | null; raw: string }>;
}

const quote = (arg: string): string => `'${arg.replace(/'/g, `'\\''`)}'`;

/** Starts `loom ARGS` on a terminal `columns` wide; write '\x03' to child.stdin for Ctrl-C. */
export function loomOnTerminal(args: string[], columns: number, env: NodeJS.ProcessEnv = {}): TerminalRun {
  const command = `stty cols ${columns} rows 24; exec ${quote(process.execPath)} ${quote(LOOM_BIN)} ${args.map(quote).join(' ')}`;
  const child = spawn('script', ['-qefc', command, '/dev/null'], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let raw = '';
  child.stdout!.on('data', (d: Buffer) => (raw += d.toString()));
  const done = new Promise<{ code: number | null; raw: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, raw }));
  });
  return { child, output: () => raw, done };
}

/** The frames of the bar: what was drawn between `\r` and `ESC[K`. */
export function frames(raw: string): string[] {
  return [...raw.matchAll(/\r([^\r\n\x1b]*)\x1b\[K/g)].map((m) => m[1]!).filter((f) => f.length > 0);
}

/** The lines left on the screen once every `\r`, `ESC[K` and newline is applied. */
export function screen(raw: string): string[] {
  const lines: string[] = [''];
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    const row = lines.length - 1;
    if (ch === '\r') col = 0;
    else if (ch === '\n') {
      lines.push('');
      col = 0;
    } else if (ch === '\x1b') {
      const seq = /^\x1b\[[0-9;?]*[A-Za-z]/.exec(raw.slice(i));
      if (seq) {
        if (seq[0].endsWith('K')) lines[row] = lines[row]!.slice(0, col);
        i += seq[0].length - 1;
      }
    } else {
      const line = lines[row]!.padEnd(col, ' ');
      lines[row] = line.slice(0, col) + ch + line.slice(col + 1);
      col++;
    }
  }
  return lines.filter((l) => l.trim().length > 0);
}
