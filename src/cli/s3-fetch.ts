// Library glue for S3 until the engine's source factory takes s3:// URIs: one object to one
// path, verified against the checksum the store vouches for, and a whole prefix into a
// directory. Like fetchFile, the output path only ever holds a complete, checked file.
import { mkdir } from 'node:fs/promises';
import { dirname, relative, resolve, sep } from 'node:path';
import { DEFAULTS } from '../core/defaults.js';
import { diskError, UsageError } from '../core/errors.js';
import type { DownloadResult } from '../fetch/download.js';
import { runFileQueue, type QueueProgress } from '../fetch/file-queue.js';
import { partPathFor } from '../fetch/fetch-file.js';
import { resolveFetchOptions, type FetchOptions } from '../fetch/options.js';
import { moveIntoPlace } from '../fetch/part-file.js';
import { RequestPool } from '../fetch/request-pool.js';
import {
  defaultCredentialProvider,
  listS3Prefix,
  parseS3Uri,
  s3ObjectChecksum,
  s3SourceFor,
  verifyS3Download,
  type S3ChecksumCheck,
  type S3Options,
} from '../sources/s3/index.js';

export interface S3FetchOptions extends FetchOptions {
  s3?: S3Options;
  /** Keys per ListObjectsV2 page for pullS3Prefix. Default 1000. */
  listPageSize?: number;
}

export interface S3FetchResult extends DownloadResult {
  uri: string;
  path: string;
  /** Which checksum the bytes were checked against (`--json`: s3Check). */
  s3Check: S3ChecksumCheck;
  seconds: number;
}

/** Downloads one object; a full-object sha256 is the expected digest, a composite one is checked after. */
export async function fetchS3(uri: string, out: string, options: S3FetchOptions = {}): Promise<S3FetchResult> {
  const { s3: s3Input = {}, ...rest } = options;
  // Listing options are not fetch options (resolveFetchOptions refuses unknown keys).
  const fetchOptions: FetchOptions = { ...rest };
  delete (fetchOptions as S3FetchOptions).listPageSize;
  const started = performance.now();
  const signal = fetchOptions.signal ?? new AbortController().signal;
  const resolved = resolveFetchOptions(fetchOptions);
  const s3: S3Options = {
    stallTimeoutMs: resolved.stallTimeoutMs,
    maxSockets: resolved.workers,
    caCertFiles: resolved.caCertFiles,
    ...s3Input,
    // One chain for the HEAD, the ranges and the part layout: credentials resolved once.
    credentials: s3Input.credentials ?? defaultCredentialProvider(s3Input.profile),
  };
  const checksum = await s3ObjectChecksum(uri, s3, signal);
  if (checksum.sha256Hex && resolved.expectedSha256 && checksum.sha256Hex !== resolved.expectedSha256) {
    throw new UsageError(`the sha256 given for ${uri} is not the one S3 stores (${checksum.sha256Hex})`);
  }
  const expectedSha256 = resolved.expectedSha256 ?? checksum.sha256Hex;
  const source = s3SourceFor(uri, s3);
  const part = partPathFor(out);
  try {
    const { downloadToPart, discardPart } = await import('../fetch/download.js');
    const result = await downloadToPart(source, part, { ...resolved, expectedSha256, computeSha256: true });
    let s3Check: S3ChecksumCheck;
    try {
      s3Check = await verifyS3Download(uri, part, checksum, result.sha256, s3, signal);
    } catch (err) {
      await discardPart(part);
      throw err;
    }
    await moveIntoPlace(part, out);
    return { ...result, uri, path: out, s3Check, seconds: (performance.now() - started) / 1000 };
  } finally {
    source.close();
  }
}

/** Where a listed key lands under `outDir`; keys that would leave it are refused. */
export function s3KeyPath(outDir: string, prefix: string, key: string): string {
  const rel = key.slice(prefix.lastIndexOf('/') + 1);
  const target = resolve(outDir, ...rel.split('/'));
  const inside = relative(resolve(outDir), target);
  if (rel === '' || inside === '' || inside.startsWith(`..${sep}`) || inside === '..') {
    throw new UsageError(`the key "${key}" would be written outside ${outDir}`, {
      hint: 'such keys cannot be pulled into a directory; fetch them one by one with -o',
    });
  }
  return target;
}

export interface S3PullOptions {
  /** Objects in progress at once, at most. Default: the pool's size (`workers`). */
  parallelFiles?: number;
  /** The whole pull's progress: totals and the active objects. */
  onProgress?: (progress: QueueProgress) => void;
  /** Called when an object is in place. */
  onFile?: (result: S3FetchResult, progress: { done: number; total: number }) => void;
}

/**
 * Pulls every object under `s3://bucket/prefix/` into `outDir`, keeping the key paths below
 * the prefix. All objects share one pool of `workers` requests (file-queue.ts): big objects
 * are split across it, small ones fetched whole in the gaps.
 */
export async function pullS3Prefix(
  uri: string,
  outDir: string,
  options: S3FetchOptions = {},
  pull: S3PullOptions = {},
): Promise<S3FetchResult[]> {
  const { bucket, key: prefix } = parseS3Uri(uri);
  const s3 = { ...options.s3, credentials: options.s3?.credentials ?? defaultCredentialProvider(options.s3?.profile) };
  options = { ...options, s3 };
  const entries = await listS3Prefix(uri, { ...options.s3, pageSize: options.listPageSize, signal: options.signal });
  // Folder markers ("dir/") hold no bytes.
  const objects = entries.filter((e) => !e.key.endsWith('/'));
  const targets = objects.map((e) => ({ key: e.key, path: s3KeyPath(outDir, prefix, e.key), size: e.size }));
  const pool = new RequestPool(options.workers ?? DEFAULTS.workers);
  const results = await runFileQueue(targets, {
    pool,
    maxActive: Math.max(1, pull.parallelFiles ?? pool.size),
    signal: options.signal,
    run: async ({ key, path }, { slots, signal, onBytes }) => {
      await mkdir(dirname(path), { recursive: true });
      return fetchS3(`s3://${bucket}/${key}`, path, {
        ...options,
        // Every object may use the whole pool: when the others are done, the last one gets it all.
        workers: pool.size,
        requestPool: slots,
        signal,
        onProgress: (p) => onBytes(p.doneBytes),
      });
    },
    onDone: (_target, result, progress) => pull.onFile?.(result, progress),
    onProgress: pull.onProgress,
  });
  // The directory the pull names exists even when the prefix held no object.
  try {
    await mkdir(outDir, { recursive: true });
  } catch (err) {
    throw diskError(err, `creating ${outDir}`, outDir);
  }
  return results.sort((a, b) => (a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0));
}
