// The id a download goes by among peers before its digest is known: the sha256 of the
// source's key, with a prefix so that it can never equal the digest of real content named
// the same way. Once the first node has the whole file, the source maps to the real digest.
import { createHash } from 'node:crypto';

export function sourceBlobId(key: string): string {
  return createHash('sha256').update(`loom-source:${key}`).digest('hex');
}
