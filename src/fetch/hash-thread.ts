// The prefix hasher on a worker thread, for large files: the sha256 (about 0.7 s of CPU per
// GiB here) then runs beside the data path instead of on its event loop, which the raw
// HTTP path keeps busy on its own. It reads the finished prefix back from the part file (the
// page cache) with its own descriptor, as the main-thread hasher does, and reports each
// piece's digest in order. Measured on this machine (README, "Benchmarks"): with the hash on
// the main thread the digest was ready ~1 s after the last byte of 1 GiB.
import { Worker } from 'node:worker_threads';
import type { FinishedPrefixHasher, PieceDigests } from './prefix-hasher.js';

// Plain CommonJS, evaluated in the worker: the bundle has no separate file to point at.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const { path, pieceSize, readSize } = workerData;
const fd = openSync(path, 'r');
const buffer = Buffer.allocUnsafe(readSize);
const hash = createHash('sha256');
let pieceHash = pieceSize > 0 ? createHash('sha256') : undefined;
let hashed = 0;
const endPiece = () => {
  parentPort.postMessage({ kind: 'piece', index: Math.ceil(hashed / pieceSize) - 1, digest: pieceHash.digest('hex') });
  pieceHash = createHash('sha256');
};
const upTo = (target) => {
  while (hashed < target) {
    let length = Math.min(buffer.length, target - hashed);
    if (pieceHash) length = Math.min(length, (Math.floor(hashed / pieceSize) + 1) * pieceSize - hashed);
    const read = readSync(fd, buffer, 0, length, hashed);
    if (read === 0) throw new Error('unexpected end of ' + path + ' at ' + hashed);
    const bytes = buffer.subarray(0, read);
    hash.update(bytes);
    if (pieceHash) pieceHash.update(bytes);
    hashed += read;
    if (pieceHash && hashed % pieceSize === 0) endPiece();
  }
};
parentPort.on('message', (message) => {
  try {
    upTo(message.end);
    if (message.kind !== 'digest') return;
    if (pieceHash && message.end % pieceSize !== 0) endPiece();
    closeSync(fd);
    parentPort.postMessage({ kind: 'digest', digest: hash.digest('hex') });
  } catch (err) {
    parentPort.postMessage({ kind: 'error', message: String(err && err.message ? err.message : err) });
  }
});
`;

type FromWorker =
  | { kind: 'piece'; index: number; digest: string }
  | { kind: 'digest'; digest: string }
  | { kind: 'error'; message: string };

export class ThreadedPrefixHasher implements FinishedPrefixHasher {
  private readonly worker: Worker;
  private target = 0;
  private failure: Error | undefined;
  private result: { resolve: (digest: string) => void; reject: (err: Error) => void } | undefined;

  constructor(path: string, pieces: PieceDigests | undefined, readSize: number) {
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, pieceSize: pieces?.pieceSize ?? 0, readSize },
    });
    // A hasher left behind by a failed download must not keep the process alive.
    this.worker.unref();
    this.worker.on('message', (message: FromWorker) => {
      if (message.kind === 'piece') pieces?.onPiece(message.index, message.digest);
      else if (message.kind === 'digest') this.result?.resolve(message.digest);
      else this.fail(new Error(message.message));
    });
    this.worker.on('error', (err) => this.fail(err));
  }

  advance(prefixEnd: number): void {
    if (prefixEnd <= this.target || this.failure) return;
    this.target = prefixEnd;
    this.worker.postMessage({ kind: 'advance', end: prefixEnd });
  }

  digest(size: number): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<string>((resolve, reject) => {
      this.result = { resolve, reject };
      this.worker.postMessage({ kind: 'digest', end: size });
    }).finally(() => this.close());
  }

  close(): void {
    void this.worker.terminate();
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.result?.reject(this.failure);
  }
}
