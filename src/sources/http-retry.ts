// The HTTP facts a retry policy needs, kept with the sources that raise the errors: which
// statuses may heal, what Retry-After asks for, and which transport failures never heal
// (an unknown host, an untrusted certificate) or heal within a few quick tries at most (a
// refused connection). The engine decides attempts; this module only says what is known.
import { ConnectionRefusedError, HostNotFoundError, LoomError, TlsError } from '../core/errors.js';

/** 408, 425 and 429 ask to come back later; 5xx may heal. Every other 4xx never does. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** Parses Retry-After (delta seconds or an HTTP date) into milliseconds from now. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** What a source says about retrying one of its errors. */
export interface RetryAdvice {
  retryable: boolean;
  /** Attempts worth making in all (the first included), when fewer than the policy's. */
  maxAttempts?: number;
}

/**
 * The source's advice for `err`, or undefined when it has none (the engine's own rules
 * apply). Errors carry it as `retryable` and, for a refused connection, `maxAttempts`.
 */
export function retryAdvice(err: unknown): RetryAdvice | undefined {
  if (!(err instanceof LoomError) || !('retryable' in err) || typeof err.retryable !== 'boolean') return undefined;
  const maxAttempts = 'maxAttempts' in err && typeof err.maxAttempts === 'number' ? err.maxAttempts : undefined;
  return maxAttempts === undefined ? { retryable: err.retryable } : { retryable: err.retryable, maxAttempts };
}

/** Node's codes for a certificate chain that does not verify. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
]);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);
const WRONG_HOST = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH']);

/** Where a request went: the URL, and the proxy it went through, if any. */
export interface RequestTarget {
  url: URL;
  proxy?: URL | undefined;
}

/**
 * Turns a transport failure into the error that says what went wrong and whether it can
 * heal. Anything not recognised is returned as it is (the engine retries socket faults).
 */
export function describeTransportError(err: unknown, target: RequestTarget): unknown {
  if (err instanceof LoomError || !(err instanceof Error)) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string') return err;
  const { url, proxy } = target;
  // DNS and TCP failures are about the first hop: the proxy when there is one.
  const hop = proxy ? `proxy ${proxy.host}` : `host ${url.hostname}`;
  if (code === 'ENOTFOUND') {
    return new HostNotFoundError(`${hop} does not resolve`, {
      url: url.href,
      cause: err,
      hint: proxy ? 'check HTTPS_PROXY / HTTP_PROXY' : 'check the host name in the URL',
    });
  }
  if (code === 'ECONNREFUSED') {
    return new ConnectionRefusedError(`connection refused by ${proxy ? `proxy ${proxy.host}` : url.host}`, {
      url: url.href,
      cause: err,
      hint: proxy ? 'check that the proxy runs (HTTPS_PROXY / HTTP_PROXY)' : 'check the port and that the server runs',
    });
  }
  if (UNTRUSTED.has(code)) {
    return new TlsError(`certificate of ${url.host} not trusted (${code})`, {
      url: url.href,
      cause: err,
      hint: 'pass --ca-cert or NODE_EXTRA_CA_CERTS with the issuing CA',
    });
  }
  if (EXPIRED.has(code)) {
    return new TlsError(`certificate of ${url.host} is not valid now (${code})`, { url: url.href, cause: err });
  }
  if (WRONG_HOST.has(code)) {
    return new TlsError(`certificate does not name ${url.hostname}: ${err.message}`, { url: url.href, cause: err });
  }
  return err;
}
