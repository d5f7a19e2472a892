// The manifest the node cache keeps for a complete blob, when it keeps one:
// `<cache>/manifests/<digest>.json` holding `{ digest, size, pieceSize, pieces, verifiedAgainst? }`.
// The agent publishes it to the control plane with the blob's first announcement; a blob
// without one is announced all the same (fetchers then take the manifest from elsewhere).
// A file that does not describe its own blob is ignored, never published.
import { promises as fsp } from 'node:fs';
import { manifestPath, type CacheLayout } from '../cache/cache-root.js';
import type { ManifestRecord } from '../control-plane/client.js';
import { pieceCount } from '../core/manifest.js';

const DIGEST = /^[0-9a-f]{64}$/;
const VERIFIED_AGAINST = new Set(['sha256-pinned', 'hub-sha256', 's3-checksum', 'first-origin-fetch']);

export async function readCachedManifest(layout: CacheLayout, digest: string): Promise<ManifestRecord | undefined> {
  const text = await fsp.readFile(manifestPath(layout, digest), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const { size, pieceSize, pieces, verifiedAgainst } = value;
  if (value.digest !== digest) return undefined;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (typeof pieceSize !== 'number' || !Number.isSafeInteger(pieceSize) || pieceSize < 1) return undefined;
  if (!Array.isArray(pieces) || pieces.length !== pieceCount(size, pieceSize)) return undefined;
  if (!pieces.every((p) => typeof p === 'string' && DIGEST.test(p))) return undefined;
  // A manifest that does not say what it was checked against is not published.
  if (typeof verifiedAgainst !== 'string' || !VERIFIED_AGAINST.has(verifiedAgainst)) return undefined;
  return {
    digest,
    size,
    pieceSize,
    pieces: pieces as string[],
    verifiedAgainst: verifiedAgainst as ManifestRecord['verifiedAgainst'],
  };
}
