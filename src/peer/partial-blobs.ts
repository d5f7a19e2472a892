// Downloads in progress in the node cache, as the agent sees them: `<cache>/tmp/<id>.part`
// holds the bytes and `<cache>/tmp/<id>.pieces.json` the manifest and the pieces verified so
// far (written atomically by the downloader: src/cache/partial-blob.ts, and
// docs/design/peers-and-pieces.md). `id` is the blob's digest, or the source's id while the
// digest is not known yet; either is 64 hex digits and is served and announced as is. The
// agent only reads them: a range of a partial blob is served when every piece it touches is
// verified. A file that is missing, half-written or does not describe its own name is
// treated as no partial at all, never as something to serve.
import { promises as fsp } from 'node:fs';
import { partPath, type CacheLayout } from '../cache/cache-root.js';
import { partialRecordPath, type PartialBlobState } from '../cache/partial-blob.js';
import { pieceCount } from '../core/manifest.js';

/** The contents of `<digest>.pieces.json`, as the cache writes it (src/cache/partial-blob.ts). */
export type PiecesFile = PartialBlobState;

/** A parsed pieces file with its verified set ready for range checks. */
export interface PartialBlob extends PiecesFile {
  partPath: string;
  verifiedSet: ReadonlySet<number>;
}

const DIGEST = /^[0-9a-f]{64}$/;
const PIECES_SUFFIX = '.pieces.json';

/** Checks a pieces file's JSON against the name it was found under; undefined when it does not hold. */
export function parsePiecesFile(text: string, digest: string): PiecesFile | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const { size, pieceSize, pieces, verified } = v;
  if (v.digest !== digest) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (typeof pieceSize !== 'number' || !Number.isSafeInteger(pieceSize) || pieceSize < 1) return undefined;
  const count = pieceCount(size, pieceSize);
  if (!Array.isArray(pieces) || pieces.length !== count) return undefined;
  // A download without a manifest learns piece digests as its prefix is hashed: '' until then.
  if (!pieces.every((p) => typeof p === 'string' && (p === '' || DIGEST.test(p)))) return undefined;
  if (!Array.isArray(verified)) return undefined;
  const seen = new Set<number>();
  for (const i of verified) {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= count) return undefined;
    seen.add(i);
  }
  return {
    digest,
    size,
    pieceSize,
    pieces: pieces as string[],
    verified: [...seen].sort((a, b) => a - b),
  };
}

/**
 * Reads pieces files, re-parsing one only when it was replaced: the downloader renames a new
 * file in for every update. Inode numbers are reused at once after a rename frees the old
 * one and two updates can fall in the same millisecond with the same length, so the change
 * time in nanoseconds is compared too (a stale copy answered 404 for pieces already there).
 */
export class PartialBlobReader {
  private readonly parsed = new Map<string, { ino: bigint; ctimeNs: bigint; size: bigint; blob: PartialBlob }>();

  constructor(private readonly layout: CacheLayout) {}

  /** The partial download of `digest`, or undefined when there is none (or it is unreadable). */
  async read(digest: string): Promise<PartialBlob | undefined> {
    const path = partialRecordPath(this.layout, digest);
    const stat = await fsp.stat(path, { bigint: true }).catch(() => undefined);
    if (!stat?.isFile()) {
      this.parsed.delete(digest);
      return undefined;
    }
    const known = this.parsed.get(digest);
    if (known && known.ino === stat.ino && known.ctimeNs === stat.ctimeNs && known.size === stat.size) {
      return known.blob;
    }
    const text = await fsp.readFile(path, 'utf8').catch(() => undefined);
    const file = text === undefined ? undefined : parsePiecesFile(text, digest);
    if (!file) {
      this.parsed.delete(digest);
      return undefined;
    }
    const blob: PartialBlob = {
      ...file,
      partPath: partPath(this.layout, digest),
      verifiedSet: new Set(file.verified),
    };
    this.parsed.set(digest, { ino: stat.ino, ctimeNs: stat.ctimeNs, size: stat.size, blob });
    return blob;
  }

  /** Every partial download in the cache now. */
  async list(): Promise<PartialBlob[]> {
    const names = await fsp.readdir(this.layout.tmp).catch(() => [] as string[]);
    const digests = names
      .filter((n) => n.endsWith(PIECES_SUFFIX))
      .map((n) => n.slice(0, -PIECES_SUFFIX.length))
      .filter((d) => DIGEST.test(d));
    for (const digest of this.parsed.keys()) if (!digests.includes(digest)) this.parsed.delete(digest);
    const blobs = await Promise.all(digests.map((d) => this.read(d)));
    return blobs.filter((b): b is PartialBlob => b !== undefined);
  }
}

/** Whether bytes `start..end` (inclusive) lie wholly in verified pieces. */
export function rangeVerified(blob: PartialBlob, start: number, end: number): boolean {
  if (end < start || end >= blob.size) return false;
  const first = Math.floor(start / blob.pieceSize);
  const last = Math.floor(end / blob.pieceSize);
  for (let i = first; i <= last; i++) if (!blob.verifiedSet.has(i)) return false;
  return true;
}
