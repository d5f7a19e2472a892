// What an S3 object's stored checksum vouches for: asked for with x-amz-checksum-mode
// (HEAD), base64 turned into hex. A full-object sha256 is the object's identity and the
// engine checks the bytes against it; a composite one (multipart: the sha256 of the parts'
// sha256s, written "<base64>-<parts>") is checked part by part once the part layout is read.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { DigestMismatchError } from '../../core/errors.js';
import { S3Requester, type S3Options } from './s3-requester.js';
import { parseS3Uri, type S3Location } from './s3-uri.js';

export type S3ChecksumType = 'FULL_OBJECT' | 'COMPOSITE' | 'NONE';

export interface S3ObjectChecksum {
  /** NONE: no sha256 stored (S3 may still hold a CRC, which Loom does not check). */
  type: S3ChecksumType;
  size: number;
  etag: string | undefined;
  /** FULL_OBJECT: the object's sha256, lower-case hex. */
  sha256Hex?: string;
  /** COMPOSITE: sha256 over the parts' raw sha256s, hex, and the number of parts. */
  composite?: { sha256Hex: string; parts: number };
  /** Other checksum algorithms the store reported (crc32, crc64nvme…), not used. */
  others: string[];
}

/** How a downloaded object was checked, as `--json` reports it under `check`. */
export interface S3ChecksumCheck {
  check: 'sha256-full-object' | 'sha256-composite' | 'none';
  expected?: string;
  actual?: string;
  parts?: number;
}

const CHECKSUM_HEADERS = ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256'];

/** HEADs the object asking for its checksum. */
export async function s3ObjectChecksum(
  uri: string,
  options: S3Options = {},
  signal: AbortSignal = new AbortController().signal,
): Promise<S3ObjectChecksum> {
  const location = parseS3Uri(uri);
  const requester = new S3Requester(options);
  try {
    const res = await requester.send({
      method: 'HEAD',
      location,
      headers: { 'x-amz-checksum-mode': 'ENABLED' },
      signal,
    });
    res.resume();
    return checksumOf(res.headers, Number(res.headers['content-length']));
  } finally {
    requester.close();
  }
}

type Headers = Record<string, string | string[] | undefined>;

function checksumOf(headers: Headers, size: number): S3ObjectChecksum {
  const header = (name: string): string | undefined => {
    const value = headers[name];
    return typeof value === 'string' ? value : undefined;
  };
  const others = CHECKSUM_HEADERS.filter((a) => a !== 'sha256' && header(`x-amz-checksum-${a}`) !== undefined);
  const base = { size, etag: header('etag'), others };
  const value = header('x-amz-checksum-sha256');
  if (!value) return { type: 'NONE', ...base };
  const [digest, parts] = value.split('-');
  const hex = Buffer.from(digest ?? '', 'base64').toString('hex');
  if (hex.length !== 64) return { type: 'NONE', ...base };
  if (parts !== undefined || header('x-amz-checksum-type') === 'COMPOSITE') {
    return { type: 'COMPOSITE', ...base, composite: { sha256Hex: hex, parts: Number(parts ?? 1) } };
  }
  return { type: 'FULL_OBJECT', ...base, sha256Hex: hex };
}

/** Part sizes of a multipart object: HEAD ?partNumber=1 and =N, all parts when not uniform. */
export async function s3PartSizes(
  location: S3Location,
  parts: number,
  size: number,
  requester: S3Requester,
  signal: AbortSignal,
): Promise<number[]> {
  const partSize = async (n: number): Promise<number> => {
    const res = await requester.send({
      method: 'HEAD',
      location,
      query: new URLSearchParams({ partNumber: String(n) }),
      signal,
    });
    res.resume();
    return Number(res.headers['content-length']);
  };
  const first = await partSize(1);
  const last = parts === 1 ? first : await partSize(parts);
  if (first * (parts - 1) + last === size) return [...Array<number>(parts - 1).fill(first), last];
  const sizes: number[] = [];
  for (let n = 1; n <= parts; n++) sizes.push(await partSize(n));
  return sizes;
}

/** sha256 over the raw sha256 of each part of `file`: the composite an S3 multipart object has. */
export async function compositeSha256(file: string, partSizes: readonly number[]): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const outer = createHash('sha256');
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    let position = 0;
    for (const partSize of partSizes) {
      const inner = createHash('sha256');
      let left = partSize;
      while (left > 0) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, left), position);
        if (bytesRead === 0) break;
        inner.update(buffer.subarray(0, bytesRead));
        position += bytesRead;
        left -= bytesRead;
      }
      outer.update(inner.digest());
    }
    return outer.digest('hex');
  } finally {
    await handle.close();
  }
}

/**
 * Checks a downloaded file against the object's checksum. A full-object sha256 is compared
 * with `sha256` (the engine's hash of the bytes); a composite one is recomputed from the file
 * part by part. Throws DigestMismatchError on a difference.
 */
export async function verifyS3Download(
  uri: string,
  file: string,
  checksum: S3ObjectChecksum,
  sha256: string | undefined,
  options: S3Options = {},
  signal: AbortSignal = new AbortController().signal,
): Promise<S3ChecksumCheck> {
  if (checksum.type === 'FULL_OBJECT' && checksum.sha256Hex) {
    const result: S3ChecksumCheck = { check: 'sha256-full-object', expected: checksum.sha256Hex, actual: sha256 };
    if (sha256 !== checksum.sha256Hex) throw mismatch(uri, result);
    return result;
  }
  if (checksum.type === 'COMPOSITE' && checksum.composite) {
    const requester = new S3Requester(options);
    try {
      const { parts, sha256Hex } = checksum.composite;
      const sizes = await s3PartSizes(parseS3Uri(uri), parts, checksum.size, requester, signal);
      const actual = await compositeSha256(file, sizes);
      const result: S3ChecksumCheck = { check: 'sha256-composite', expected: sha256Hex, actual, parts };
      if (actual !== sha256Hex) throw mismatch(uri, result);
      return result;
    } finally {
      requester.close();
    }
  }
  return { check: 'none' };
}

function mismatch(uri: string, result: S3ChecksumCheck): DigestMismatchError {
  return new DigestMismatchError(
    `${uri}: the bytes do not match the object's ${result.check} checksum (expected ${result.expected}, got ${result.actual})`,
    {
      url: uri,
      expected: result.expected,
      actual: result.actual,
      hint: 'the store served other bytes than its checksum describes',
    },
  );
}
