// s3://bucket/key URIs, and the HTTP URL of an object on AWS or on an S3-compatible store
// (path-style there, since compatible stores rarely resolve bucket subdomains).
import { InvalidUrlError } from '../../core/errors.js';

export interface S3Location {
  bucket: string;
  /** The object key, or the prefix of a listing; '' for the whole bucket. */
  key: string;
}

/** Bucket names S3 accepts today (3-63 chars of a-z, 0-9, '.', '-'), plus '_' for old buckets. */
const BUCKET = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;

export function isS3Uri(input: string): boolean {
  return input.startsWith('s3://');
}

/** Parses `s3://bucket/key`; the key is taken verbatim (no percent-decoding). */
export function parseS3Uri(input: string): S3Location {
  if (!isS3Uri(input)) {
    throw new InvalidUrlError(`"${input}" is not an s3:// URI`, { hint: 'write s3://bucket/key' });
  }
  const rest = input.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) {
    throw new InvalidUrlError(`"${bucket}" in ${input} is not a valid S3 bucket name`, {
      hint: 'write s3://bucket/key with a bucket of 3-63 lower-case letters, digits, dots or dashes',
    });
  }
  return { bucket, key };
}

/** A key segment-encoded the way SigV4 canonicalizes S3 paths (RFC 3986, '/' kept). */
export function encodeKey(key: string): string {
  return key
    .split('/')
    .map((segment) =>
      encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    )
    .join('/');
}
