// A download in progress, as the node's agent sees it: `tmp/<id>.part` holds the bytes and
// `tmp/<id>.pieces.json` says which pieces of it are verified, so the agent can serve those
// pieces to other nodes while the download goes on. `id` is the blob's digest, or, while the
// digest is not known yet, the source's id (see peer/identity.ts). The record is rewritten
// atomically (temp file + rename), at most every `intervalMs`, so a reader never sees half
// of one and a fast download does not spend its time rewriting it.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CacheLayout } from './cache-root.js';

/** What `tmp/<id>.pieces.json` holds. */
export interface PartialBlobState {
  /** The blob's digest, or the source id while the digest is unknown. */
  digest: string;
  size: number;
  pieceSize: number;
  /** Digest of each piece where known ('' where not yet). */
  pieces: string[];
  /** Indexes of the pieces whose bytes are on disk and verified. */
  verified: number[];
}

export function partialRecordPath(layout: CacheLayout, id: string): string {
  return join(layout.tmp, `${id}.pieces.json`);
}

export class PartialBlobRecord {
  private readonly state: PartialBlobState;
  private readonly verified = new Set<number>();
  private dirty = false;
  private lastWriteAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly layout: CacheLayout,
    id: string,
    size: number,
    pieceSize: number,
    pieces: readonly string[] = [],
    private readonly intervalMs = 200,
  ) {
    const count = size === 0 ? 0 : Math.ceil(size / pieceSize);
    this.state = {
      digest: id,
      size,
      pieceSize,
      pieces: Array.from({ length: count }, (_, i) => pieces[i] ?? ''),
      verified: [],
    };
  }

  get path(): string {
    return partialRecordPath(this.layout, this.state.digest);
  }

  /** Marks piece `index` verified (with its digest when it was just computed). */
  markVerified(index: number, digest?: string): void {
    if (this.closed || this.verified.has(index)) return;
    this.verified.add(index);
    if (digest) this.state.pieces[index] = digest;
    this.dirty = true;
    this.schedule();
  }

  get verifiedCount(): number {
    return this.verified.size;
  }

  /** Writes the record now if anything changed. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.dirty || this.closed) return;
    this.dirty = false;
    this.lastWriteAt = Date.now();
    const state = { ...this.state, verified: [...this.verified].sort((a, b) => a - b) };
    const temp = `${this.path}.${process.pid}.tmp`;
    try {
      writeFileSync(temp, JSON.stringify(state));
      renameSync(temp, this.path);
    } catch {
      // The record only helps peers; a full or read-only tmp/ must not fail the download.
      rmSync(temp, { force: true });
    }
  }

  /** Removes the record: the download is over (the blob is complete, or gone). */
  remove(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    rmSync(this.path, { force: true });
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastWriteAt + this.intervalMs - Date.now());
    this.timer = setTimeout(() => this.flush(), wait);
    this.timer.unref();
  }
}
