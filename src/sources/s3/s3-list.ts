// Every object under an S3 prefix, with ListObjectsV2 followed page by page (continuation
// tokens), in the store's key order. A token given before (A, B, A, …) or more pages than any
// bucket has is a listing that never ends: it fails instead of looping for ever (page-guard.ts).
import { DEFAULTS } from '../../core/defaults.js';
import { BadResponseError } from '../../core/errors.js';
import { PageGuard } from '../page-guard.js';
import { S3Requester, type S3Options } from './s3-requester.js';
import { xmlText } from './s3-errors.js';
import { parseS3Uri } from './s3-uri.js';

export interface S3ObjectEntry {
  /** The full key. */
  key: string;
  size: number;
  etag: string | undefined;
  lastModified: string | undefined;
}

export interface ListS3Options extends S3Options {
  /** Keys per page (1 to 1000). Default 1000, S3's most. */
  pageSize?: number;
  /** Pages followed at most. Default DEFAULTS.maxListPages. */
  maxPages?: number;
  signal?: AbortSignal;
}

/** Lists every object whose key starts with the URI's key (`s3://bucket/prefix/`). */
export async function listS3Prefix(uri: string, options: ListS3Options = {}): Promise<S3ObjectEntry[]> {
  const { bucket, key: prefix } = parseS3Uri(uri);
  const requester = new S3Requester(options);
  const signal = options.signal ?? new AbortController().signal;
  const entries: S3ObjectEntry[] = [];
  const guard = new PageGuard({
    maxPages: options.maxPages ?? DEFAULTS.maxListPages,
    listing: `the listing of s3://${bucket}/${prefix}`,
    named: 'a continuation token',
    hint: 'the store pages wrongly; check the endpoint (AWS_ENDPOINT_URL) and retry later',
  });
  try {
    let token: string | undefined;
    for (;;) {
      const query = new URLSearchParams({ 'list-type': '2', prefix, 'max-keys': String(options.pageSize ?? 1000) });
      if (token) query.set('continuation-token', token);
      const res = await requester.send({ method: 'GET', location: { bucket, key: '' }, query, signal });
      const chunks: Buffer[] = [];
      for await (const chunk of res as AsyncIterable<Buffer>) chunks.push(chunk);
      const xml = Buffer.concat(chunks).toString('utf8');
      for (const match of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
        const block = match[1]!;
        const key = xmlText(block, 'Key');
        const size = Number(xmlText(block, 'Size'));
        if (key === undefined || !Number.isSafeInteger(size)) {
          throw new BadResponseError(`a ListObjectsV2 page of s3://${bucket} has an entry without Key or Size`);
        }
        entries.push({ key, size, etag: xmlText(block, 'ETag'), lastModified: xmlText(block, 'LastModified') });
      }
      const truncated = xmlText(xml, 'IsTruncated') === 'true';
      const next = xmlText(xml, 'NextContinuationToken');
      if (!truncated) break;
      if (!next || next === token) {
        throw new BadResponseError(`s3://${bucket} said the listing goes on but gave no new continuation token`);
      }
      guard.follow(next);
      token = next;
    }
  } finally {
    requester.close();
  }
  return entries;
}
