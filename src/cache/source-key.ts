// The identity of a remote object, for the cache index and the control plane: the URL
// normalised, with the signature parameters of presigned URLs removed, so that two signed
// URLs of one object map to one entry. hf:// and s3:// keys pass through normalised.
import { InvalidUrlError } from '../core/errors.js';

/** Query parameters that sign or time-limit a URL rather than name the object (lower case). */
const SIGNATURE_PARAMS = new Set([
  'x-amz-signature',
  'x-amz-date',
  'x-amz-credential',
  'x-amz-expires',
  'x-amz-security-token',
  'x-amz-algorithm',
  'x-amz-signedheaders',
  'x-amz-content-sha256',
  'expires',
  'signature',
  'key-pair-id',
  'policy',
]);

function isSignatureParam(name: string): boolean {
  const lower = name.toLowerCase();
  return SIGNATURE_PARAMS.has(lower) || lower.startsWith('x-goog-');
}

export function sourceKey(input: string): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new InvalidUrlError(`"${input}" is not a valid URL`);
  }
  url.hash = '';
  url.username = '';
  url.password = '';
  // Keep the remaining parameters in a stable order: ?b=1&a=2 and ?a=2&b=1 name one object.
  const kept = [...url.searchParams.entries()].filter(([name]) => !isSignatureParam(name));
  kept.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  url.search = new URLSearchParams(kept).toString();
  // URL already lower-cases scheme and host and drops default ports.
  return url.href;
}
