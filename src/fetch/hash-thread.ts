// The prefix hasher on a worker thread, for large files: the sha256 (about 0.7 s of CPU per
// GiB here) then runs beside the data path instead of on its event loop, which the raw
// HTTP path keeps busy on its own. It reads the finished prefix back from the part file (the
// page cache) with its own descriptor, as the main-thread hasher does, and reports each
// piece's digest in order. Measured on this machine (README, "Benchmarks"): with the hash on
// the main thread the digest was ready ~1 s after the last byte of 1 GiB.
//
// Pieces judged before they count (see prefix-hasher.ts): the worker stops at the piece's
// end and waits for the verdict the main thread posts; a refusal sends it back to the
// piece's start. The hashing is piece-hashing.ts's, as on the main thread.
import { Worker } from 'node:worker_threads';
import { createPieceHashing } from './piece-hashing.js';
import { pieceHashingOptions, type FinishedPrefixHasher, type PieceDigests } from './prefix-hasher.js';

// Plain CommonJS, evaluated in the worker: the bundle has no separate file to point at. The
// hashing itself is createPieceHashing's own source (piece-hashing.ts), the main thread's too.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const { path, options, readSize } = workerData;
const hashing = (${createPieceHashing.toString()})(createHash, options);
const fd = openSync(path, 'r');
const buffer = Buffer.allocUnsafe(readSize);
let target = 0;
let waiting = false;
let digestAt = -1;
const ended = (piece) => {
  if (!piece) return;
  parentPort.postMessage({ kind: 'piece', index: piece.index, digest: piece.digest });
  if (options.judged) waiting = true;
};
const pump = () => {
  while (!waiting && hashing.hashed < target) {
    const read = readSync(fd, buffer, 0, hashing.nextRead(target, buffer.length), hashing.hashed);
    if (read === 0) throw new Error('unexpected end of ' + path + ' at ' + hashing.hashed);
    ended(hashing.update(buffer.subarray(0, read)));
  }
  if (waiting || digestAt < 0 || hashing.hashed < digestAt) return;
  ended(hashing.endPartial());
  if (waiting) return;
  closeSync(fd);
  digestAt = -1;
  parentPort.postMessage({ kind: 'digest', digest: hashing.digest(), hashedBytes: hashing.hashedBytes });
};
parentPort.on('message', (message) => {
  try {
    if (message.kind === 'verdict') {
      waiting = false;
      hashing.settle(message.accept);
      if (!message.accept) target = hashing.hashed;
    } else {
      target = Math.max(target, message.end);
      if (message.kind === 'digest') digestAt = message.end;
    }
    pump();
  } catch (err) {
    parentPort.postMessage({ kind: 'error', message: String(err && err.message ? err.message : err) });
  }
});
`;

type FromWorker =
  | { kind: 'piece'; index: number; digest: string }
  | { kind: 'digest'; digest: string | undefined; hashedBytes: number }
  | { kind: 'error'; message: string };

export class ThreadedPrefixHasher implements FinishedPrefixHasher {
  private readonly worker: Worker;
  private target = 0;
  hashedBytes = 0;
  private failure: Error | undefined;
  private result: { resolve: (digest: string | undefined) => void; reject: (err: Error) => void } | undefined;
  private readonly onFailed: ((err: unknown) => void) | undefined;

  constructor(path: string, pieces: PieceDigests | undefined, readSize: number) {
    this.onFailed = pieces?.failed;
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, options: pieceHashingOptions(pieces), readSize },
    });
    // A hasher left behind by a failed download must not keep the process alive.
    this.worker.unref();
    this.worker.on('message', (message: FromWorker) => {
      if (message.kind === 'piece') this.piece(pieces!, message.index, message.digest);
      else if (message.kind === 'digest') {
        this.hashedBytes = message.hashedBytes;
        this.result?.resolve(message.digest);
      } else this.fail(new Error(message.message));
    });
    this.worker.on('error', (err) => this.fail(err));
  }

  /** The worker ended piece `index`: judged (the worker waits for the verdict), then counted. */
  private piece(pieces: PieceDigests, index: number, digest: string): void {
    if (!pieces.judge) {
      pieces.onPiece(index, digest);
      return;
    }
    const answer = (accept: boolean): void => {
      // Refused: the caller took the piece off the prefix; advance() starts again from its start.
      if (!accept) this.target = index * pieces.pieceSize;
      this.worker.postMessage({ kind: 'verdict', accept });
      if (accept) pieces.onPiece(index, digest);
    };
    const verdict = pieces.judge(index, digest);
    if (typeof verdict === 'boolean') answer(verdict);
    else verdict.then(answer, (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
  }

  advance(prefixEnd: number): void {
    if (prefixEnd <= this.target || this.failure) return;
    this.target = prefixEnd;
    this.worker.postMessage({ kind: 'advance', end: prefixEnd });
  }

  digest(size: number): Promise<string | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<string | undefined>((resolve, reject) => {
      this.result = { resolve, reject };
      this.worker.postMessage({ kind: 'digest', end: size });
    }).finally(() => this.close());
  }

  close(): void {
    void this.worker.terminate();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.result?.reject(err);
    this.onFailed?.(err);
  }
}
