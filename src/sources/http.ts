// Plain HTTP(S) origins: follows redirects (a redirect to another scheme, host or port
// keeps none of the user's headers, and an https -> http downgrade is refused unless
// allowed), sends chunk requests to the final URL, and checks every response against the
// probe and the range contract so that a lying server is caught before its bytes are trusted.
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import {
  BadResponseError,
  ContentEncodingError,
  HttpStatusError,
  InvalidUrlError,
  RedirectError,
  SourceChangedError,
} from '../core/errors.js';
import { HttpClient } from './http-client.js';
import { isRetryableStatus, parseRetryAfter } from './http-retry.js';
import type { ProxySettings } from './proxy.js';
import type { ProbeExpectation, ProbeResult, RangeBody, Source, Validator } from './source.js';

export interface HttpSourceOptions {
  /** Extra request headers (`--header`), sent to the URL's own scheme, host and port only. */
  headers?: Record<string, string>;
  /** Default DEFAULTS.maxRedirects (10). */
  maxRedirects: number;
  stallTimeoutMs: number;
  /** Sockets per host; the worker count. */
  maxSockets: number;
  caCertFiles?: readonly string[];
  /** Follow a redirect from https to http. Default false: refused with RedirectError. */
  allowHttpsDowngrade?: boolean;
  /** Default: from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY). */
  proxy?: ProxySettings;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Statuses a signed CDN URL answers with once it has expired. */
const EXPIRED_URL = new Set([401, 403, 410]);
/** What every request carries; the user's headers come on top, for the first origin only. */
const BASE_HEADERS: OutgoingHttpHeaders = { 'user-agent': 'loom/0.1', 'accept-encoding': 'identity' };

/** Parses and checks a URL the user gave; only http and https are fetched here. */
export function parseHttpUrl(input: string): URL {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new InvalidUrlError(`"${input}" is not a valid URL`, {
      hint: 'give a full URL such as https://host/path/model.safetensors',
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidUrlError(`unsupported URL scheme "${url.protocol}" in ${input}`, {
      hint: 'use an http:// or https:// URL',
    });
  }
  return url;
}

interface ContentRange {
  start: number;
  end: number;
  total: number | undefined;
}

export function parseContentRange(value: string | undefined): ContentRange | undefined {
  const match = value ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim()) : null;
  if (!match) return undefined;
  return {
    start: Number(match[1]),
    end: Number(match[2]) + 1,
    total: match[3] === '*' ? undefined : Number(match[3]),
  };
}

function validatorOf(res: IncomingMessage): Validator {
  const validator: Validator = {};
  if (typeof res.headers.etag === 'string') validator.etag = res.headers.etag;
  if (typeof res.headers['last-modified'] === 'string') validator.lastModified = res.headers['last-modified'];
  return validator;
}

/** The If-Range value: a strong ETag, else Last-Modified (weak ETags are not allowed there). */
export function ifRangeValue(validator: Validator): string | undefined {
  if (validator.etag && !validator.etag.startsWith('W/')) return validator.etag;
  return validator.lastModified;
}

function validatorChanged(expected: Validator, actual: Validator): boolean {
  if (expected.etag && actual.etag) return expected.etag !== actual.etag;
  if (expected.lastModified && actual.lastModified) return expected.lastModified !== actual.lastModified;
  return false;
}

function statusError(res: IncomingMessage, url: URL): HttpStatusError {
  const status = res.statusCode ?? 0;
  res.resume();
  const hint =
    status === 401 || status === 403
      ? 'check the credentials (--header "Authorization: Bearer …") or that the URL has not expired'
      : status === 404
        ? 'check the URL'
        : undefined;
  const retryAfter = res.headers['retry-after'];
  return new HttpStatusError(`HTTP ${status} ${res.statusMessage ?? ''} from ${url.href}`.replace('  ', ' '), {
    url: url.href,
    status,
    hint,
    retryable: isRetryableStatus(status),
    retryAfterMs: parseRetryAfter(typeof retryAfter === 'string' ? retryAfter : undefined),
  });
}

export class HttpSource implements Source {
  readonly url: string;
  readonly label: string;
  private readonly origin: URL;
  private readonly client: HttpClient;
  private readonly baseHeaders: OutgoingHttpHeaders;
  /** Where ranges are fetched after redirects, and the headers that may go there. */
  private target: { url: URL; headers: OutgoingHttpHeaders };
  private refreshing: Promise<void> | undefined;

  constructor(
    url: string,
    private readonly options: HttpSourceOptions,
  ) {
    this.origin = parseHttpUrl(url);
    this.url = this.origin.href;
    this.label = this.origin.host;
    this.client = new HttpClient({
      maxSockets: options.maxSockets,
      caCertFiles: options.caCertFiles,
      connectTimeoutMs: options.stallTimeoutMs,
      proxy: options.proxy,
    });
    this.baseHeaders = { ...BASE_HEADERS, ...lowerCaseKeys(options.headers ?? {}) };
    this.target = { url: this.origin, headers: this.baseHeaders };
  }

  /** GETs `url`, following redirects; the answer is the first non-redirect response. */
  private async follow(
    range: string | undefined,
    extra: OutgoingHttpHeaders,
    signal: AbortSignal,
    stallTimeoutMs = this.options.stallTimeoutMs,
  ): Promise<{ res: IncomingMessage; url: URL; headers: OutgoingHttpHeaders }> {
    let url = this.origin;
    let headers = { ...this.baseHeaders };
    for (let hop = 0; ; hop++) {
      const res = await this.client.request(url, {
        headers: { ...headers, ...extra, ...(range && { range }) },
        signal,
        stallTimeoutMs,
      });
      const status = res.statusCode ?? 0;
      if (!REDIRECTS.has(status)) return { res, url, headers };
      res.resume();
      const location = res.headers.location;
      if (!location)
        throw new RedirectError(`HTTP ${status} from ${url.href} without a Location header`, { url: url.href });
      if (hop >= this.options.maxRedirects) {
        throw new RedirectError(`more than ${this.options.maxRedirects} redirects starting at ${this.url}`, {
          url: this.url,
          hint: 'check the URL for a redirect loop',
        });
      }
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new RedirectError(`redirect to unsupported scheme ${next.protocol}`, { url: next.href });
      }
      if (url.protocol === 'https:' && next.protocol === 'http:' && !this.options.allowHttpsDowngrade) {
        throw new RedirectError(`refused the redirect from ${url.href} to ${next.href}: it drops HTTPS`, {
          url: next.href,
          hint: 'use a URL that stays on HTTPS, or allow the downgrade (library option allowHttpsDowngrade)',
        });
      }
      // Credentials (Authorization, cookies, API keys in any -H header) are for the origin
      // the user named: another scheme, host or port gets none (a signed CDN URL needs none).
      if (next.origin !== url.origin) headers = { ...BASE_HEADERS };
      url = next;
    }
  }

  async probe(firstRange: readonly [number, number], signal: AbortSignal): Promise<ProbeResult> {
    const [start, end] = firstRange;
    const { res, url, headers } = await this.follow(`bytes=${start}-${end - 1}`, {}, signal);
    this.target = { url, headers };
    const status = res.statusCode ?? 0;
    const validator = validatorOf(res);
    rejectEncoded(res, url);
    if (status === 206) {
      const range = checkedRange(res, url, start, end, undefined);
      return {
        size: range.total,
        acceptsRanges: true,
        validator,
        body: { start, end: range.end, stream: res },
        finalUrl: url.href,
      };
    }
    if (status === 200) {
      const length = Number(res.headers['content-length']);
      const size = Number.isSafeInteger(length) && res.headers['content-length'] !== undefined ? length : undefined;
      return { size, acceptsRanges: false, validator, body: { start: 0, end: size, stream: res }, finalUrl: url.href };
    }
    if (status === 416) {
      // Only an empty file cannot serve its first byte.
      const range = /\*\/(\d+)/.exec(String(res.headers['content-range'] ?? ''));
      if (range && Number(range[1]) === 0 && start === 0) {
        res.resume();
        return {
          size: 0,
          acceptsRanges: true,
          validator,
          body: { start: 0, end: 0, stream: Readable.from([]) },
          finalUrl: url.href,
        };
      }
    }
    throw statusError(res, url);
  }

  async openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<RangeBody> {
    const res = await this.requestRange(start, end, expect, signal);
    const status = res.statusCode ?? 0;
    const url = this.target.url;
    const actual = validatorOf(res);
    if (status === 206) {
      if (validatorChanged(expect.validator, actual)) {
        res.destroy();
        throw changed(url, expect.validator, actual);
      }
      rejectEncoded(res, url);
      const range = parseContentRange(res.headers['content-range']);
      const sameVersion = Boolean(actual.etag ?? actual.lastModified) && !validatorChanged(expect.validator, actual);
      // Without a validator to say otherwise, another total means the file was replaced.
      if (range?.total !== undefined && range.total !== expect.size && !sameVersion) {
        res.destroy();
        throw changed(url, expect.validator, actual, `size ${expect.size} became ${range.total}`);
      }
      // A shorter range than asked is legal (RFC 9110 14.4): the engine asks for the rest.
      const checked = checkedRange(res, url, start, end, expect.size);
      return { start, end: checked.end, stream: res };
    }
    if (status === 200) {
      res.destroy();
      // With If-Range, a full answer means the validator no longer matches.
      if (validatorChanged(expect.validator, actual) || (!actual.etag && !actual.lastModified)) {
        throw changed(url, expect.validator, actual);
      }
      throw new BadResponseError(`${url.host} ignored the Range header of a chunk request (HTTP 200)`, {
        url: url.href,
      });
    }
    if (status === 416) {
      res.resume();
      throw changed(url, expect.validator, actual, `range ${start}-${end - 1} is no longer satisfiable`);
    }
    throw statusError(res, url);
  }

  private async requestRange(
    start: number,
    end: number,
    expect: ProbeExpectation,
    signal: AbortSignal,
  ): Promise<IncomingMessage> {
    const ifRange = ifRangeValue(expect.validator);
    const send = (): Promise<IncomingMessage> =>
      this.client.request(this.target.url, {
        headers: {
          ...this.target.headers,
          range: `bytes=${start}-${end - 1}`,
          ...(ifRange && { 'if-range': ifRange }),
        },
        signal,
        stallTimeoutMs: this.options.stallTimeoutMs,
      });
    const res = await send();
    const redirected = this.target.url.href !== this.origin.href;
    if (!redirected || !EXPIRED_URL.has(res.statusCode ?? 0)) return res;
    // A signed URL from a redirect has expired: ask the origin for a fresh one, once.
    res.resume();
    await this.refreshTarget(signal);
    return send();
  }

  private refreshTarget(signal: AbortSignal): Promise<void> {
    this.refreshing ??= this.follow('bytes=0-0', {}, signal)
      .then(({ res, url, headers }) => {
        res.resume();
        this.target = { url, headers };
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  async revalidate(validator: Validator, signal: AbortSignal, timeoutMs: number): Promise<'fresh' | 'changed'> {
    const conditions: OutgoingHttpHeaders = {};
    if (validator.etag) conditions['if-none-match'] = validator.etag;
    if (validator.lastModified) conditions['if-modified-since'] = validator.lastModified;
    if (!validator.etag && !validator.lastModified) return 'changed';
    const { res, url } = await this.follow('bytes=0-0', conditions, signal, timeoutMs);
    const status = res.statusCode ?? 0;
    if (status === 304) {
      res.resume();
      return 'fresh';
    }
    if (status === 200 || status === 206) {
      res.destroy();
      // A server that ignores conditions still tells the version in its validators.
      const actual = validatorOf(res);
      const same = (actual.etag ?? actual.lastModified) !== undefined && !validatorChanged(validator, actual);
      return same ? 'fresh' : 'changed';
    }
    throw statusError(res, url);
  }

  close(): void {
    this.client.close();
  }
}

function changed(url: URL, expected: Validator, actual: Validator, detail?: string): SourceChangedError {
  const what =
    detail ??
    `validator ${expected.etag ?? expected.lastModified ?? '(none)'} became ${actual.etag ?? actual.lastModified ?? '(none)'}`;
  return new SourceChangedError(`${url.href} changed during the download (${what})`, {
    url: url.href,
    expected: expected.etag ?? expected.lastModified,
    actual: actual.etag ?? actual.lastModified,
    hint: 'rerun to fetch the new version',
  });
}

/**
 * The Content-Range of a 206 for bytes [start, end), checked: it starts where asked, ends
 * within what was asked and within the total, the total is known and (after the probe)
 * the probed size, and Content-Length agrees. Anything else is a lie, never a file.
 */
function checkedRange(
  res: IncomingMessage,
  url: URL,
  start: number,
  end: number,
  size: number | undefined,
): ContentRange & { total: number } {
  const range = parseContentRange(res.headers['content-range']);
  const problem = rangeProblem(range, res.headers['content-length'], start, end, size);
  if (problem || !range || range.total === undefined) {
    res.destroy();
    throw new BadResponseError(
      `${url.host} answered bytes=${start}-${end - 1} with ${problem ?? 'a bad range'} (Content-Range "${res.headers['content-range'] ?? '(none)'}")`,
      { url: url.href },
    );
  }
  return { ...range, total: range.total };
}

function rangeProblem(
  range: ContentRange | undefined,
  length: string | undefined,
  start: number,
  end: number,
  size: number | undefined,
): string | undefined {
  if (!range) return 'no valid Content-Range';
  if (range.total === undefined) return 'an unknown total (*)';
  if (size !== undefined && range.total !== size) return `a total of ${range.total} bytes, not the ${size} probed`;
  if (range.start !== start || range.end <= range.start || range.end > end) return 'another range than asked for';
  if (range.end > range.total) return `a range ending past the total of ${range.total} bytes`;
  if (length !== undefined && Number(length) !== range.end - range.start) {
    return `Content-Length ${length}, not the ${range.end - range.start} bytes of its Content-Range`;
  }
  return undefined;
}

function rejectEncoded(res: IncomingMessage, url: URL): void {
  const encoding = res.headers['content-encoding'];
  if (encoding && encoding !== 'identity') {
    res.destroy();
    // A compressed body's ranges are ranges of the compressed bytes: no retry changes that.
    throw new ContentEncodingError(`${url.host} sent Content-Encoding ${encoding} although identity was asked for`, {
      url: url.href,
      hint: 'the server (or a proxy) compresses this file; fetch it with another tool or URL',
    });
  }
}

function lowerCaseKeys(headers: Record<string, string>): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
