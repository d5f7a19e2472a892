// Hit hints: each index row (source key -> digest, size, validator) also kept as a small
// JSON file under hints/, so that a cache hit is served without loading SQLite at all; on a
// hit, start-up is most of the time a user waits. The index stays the record: CacheIndex
// writes a hint after its row commits and removes it with the row, and a hint is trusted
// only when it names the same key and its blob is on disk with the recorded stamp (inode,
// size, mtime, ctime: blob-identity.ts). A hit served
// from a hint records its use in the hint's mtime; `loom cache` folds those times into the
// index.
import { readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Validator } from '../sources/source.js';
import { isBlobStamp, type BlobStamp } from './blob-identity.js';
import type { CacheLayout } from './cache-root.js';

export interface HitHint {
  key: string;
  digest: string;
  size: number;
  validator: Validator;
  fetchedAt: number;
  /** The blob file as last seen intact; a hint without one is not trusted for a hit. */
  stamp?: BlobStamp;
}

export interface HintUse {
  key: string;
  digest: string;
  usedAt: number;
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK_64 = (1n << 64n) - 1n;

/**
 * 64-bit FNV-1a of the key: the hint's file name. Not node:crypto, whose loading alone costs
 * a few percent of a hit; a collision is harmless because the hint carries its key.
 */
function hintName(key: string): string {
  let hash = FNV_OFFSET;
  for (const byte of Buffer.from(key, 'utf8')) hash = ((hash ^ BigInt(byte)) * FNV_PRIME) & MASK_64;
  return `${hash.toString(16).padStart(16, '0')}.json`;
}

export function hintPath(layout: CacheLayout, key: string): string {
  return join(layout.hints, hintName(key));
}

function parseHint(text: string): HitHint | undefined {
  const value = JSON.parse(text) as Partial<HitHint> | null;
  if (
    !value ||
    typeof value.key !== 'string' ||
    typeof value.digest !== 'string' ||
    !/^[0-9a-f]{64}$/.test(value.digest) ||
    !Number.isSafeInteger(value.size) ||
    typeof value.fetchedAt !== 'number' ||
    typeof value.validator !== 'object' ||
    value.validator === null ||
    (value.stamp !== undefined && !isBlobStamp(value.stamp))
  ) {
    return undefined;
  }
  return value as HitHint;
}

/** The hint for `key`, if one is there, readable and about that key. */
export function readHint(layout: CacheLayout, key: string): HitHint | undefined {
  try {
    const hint = parseHint(readFileSync(hintPath(layout, key), 'utf8'));
    return hint?.key === key ? hint : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes the hint atomically (a reader never sees half a file). Best effort: without its
 * hint a hit still works, through the index.
 */
export function writeHint(layout: CacheLayout, hint: HitHint): void {
  const path = hintPath(layout, hint.key);
  const temp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, JSON.stringify(hint));
    renameSync(temp, path);
  } catch {
    rmSync(temp, { force: true });
  }
}

export function removeHints(layout: CacheLayout, keys: readonly string[]): void {
  for (const key of keys) rmSync(hintPath(layout, key), { force: true });
}

/** Notes that `key` was just served (the hint's mtime). */
export function recordHintUse(layout: CacheLayout, key: string, now = Date.now()): void {
  try {
    utimesSync(hintPath(layout, key), now / 1000, now / 1000);
  } catch {
    /* the hint went away meanwhile (gc or rm): nothing left to date */
  }
}

/** When each hinted source was last served, for folding into the index. */
export function listHintUses(layout: CacheLayout): HintUse[] {
  const uses: HintUse[] = [];
  let names: string[];
  try {
    names = readdirSync(layout.hints);
  } catch {
    return uses;
  }
  for (const name of names) {
    if (!name.endsWith('.json')) continue;
    try {
      const path = join(layout.hints, name);
      const hint = parseHint(readFileSync(path, 'utf8'));
      if (hint) uses.push({ key: hint.key, digest: hint.digest, usedAt: Math.floor(statSync(path).mtimeMs) });
    } catch {
      /* removed or being replaced while listed */
    }
  }
  return uses;
}
