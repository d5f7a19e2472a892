// The identity of a remote object, for the cache index and the control plane: the URL
// normalised, with the signature parameters of presigned URLs removed, so that two signed
// URLs of one object map to one entry. hf:// and s3:// keys pass through normalised.
// The cache keys a request made with credentials apart (cacheKey).
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

/** Request headers that carry who is asking rather than what is asked for (lower case). */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie']);
/** Other header names that look like they carry a secret (X-Api-Key, X-Auth-Token, ...). */
const SENSITIVE_NAME = /auth|token|key|secret|session|cookie|signature|password|credential/i;

const CREDENTIAL_MARK = '#credentials=';

/**
 * The cache key of a request: its source key, and when it was made with credentials (a
 * credential header, a header whose name says it is sensitive, or a user:password in the
 * URL), a hash of those. A copy fetched with credentials is then found only by a request
 * with the same credentials; one without any never gets it on a shared node.
 */
export function cacheKey(input: string, headers: Record<string, string> = {}): string {
  const key = sourceKey(input);
  const secrets = Object.entries(headers)
    .map(([name, value]) => [name.toLowerCase().trim(), value.trim()] as const)
    .filter(([name]) => CREDENTIAL_HEADERS.has(name) || SENSITIVE_NAME.test(name))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}:${value}`);
  const url = new URL(input);
  if (url.username || url.password) secrets.push(`userinfo:${url.username}:${url.password}`);
  if (secrets.length === 0) return key;
  const hash = credentialHash(secrets.join('\n'));
  return `${key}${CREDENTIAL_MARK}${hash}`;
}

/** The credential part of a cache key ('' for a key without credentials). */
export function credentialTag(key: string): string {
  const at = key.indexOf(CREDENTIAL_MARK);
  return at < 0 ? '' : key.slice(at + CREDENTIAL_MARK.length);
}

/** The source key a cache key was made from. */
export function sourceKeyOf(key: string): string {
  const at = key.indexOf(CREDENTIAL_MARK);
  return at < 0 ? key : key.slice(0, at);
}

function credentialHash(text: string): string {
  // Loaded only for requests with credentials: a plain hit does not pay for node:crypto.
  const { createHash } = process.getBuiltinModule('node:crypto');
  return createHash('sha256').update(`loom-credentials\n${text}`).digest('hex').slice(0, 32);
}

/**
 * Whether a blob known under `sourceKeys` may be served by digest to a request keyed
 * `callerKey`: some source of it was fetched without credentials, or with the caller's.
 */
export function credentialsAllow(sourceKeys: readonly string[], callerKey: string): boolean {
  if (sourceKeys.length === 0) return true;
  const mine = credentialTag(callerKey);
  return sourceKeys.some((key) => {
    const tag = credentialTag(key);
    return tag === '' || tag === mine;
  });
}
