// Plain HTTP(S) origins: follows redirects (a redirect to another scheme, host or port
// keeps none of the user's headers, and an https -> http downgrade is refused unless
// allowed), sends chunk requests to the final URL, and checks every response against the
// probe and the range contract so that a lying server is caught before its bytes are trusted.
// Probes, redirects, HTTPS and proxies go through node:http; a plain-HTTP range after the
// probe goes through the raw client (raw-http.ts), which reads the body straight into the
// engine's buffers at a fraction of the CPU. Both answers pass the same checks.
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
import { RawHttpClient, type RawResponse } from './raw-http.js';
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

/** A response head as either client gives it, with what may be done with its body. */
interface Answer {
  status: number;
  statusText: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Drops the body and its connection (a lie, a change: nothing more is wanted from it). */
  discard(): void;
  /** Reads the body away where that keeps the connection (node:http), else drops it. */
  drain(): void;
  /** The body of a 206, as bytes [start, end) of the file. */
  body(start: number, end: number): RangeBody;
}

function fromIncoming(res: IncomingMessage): Answer {
  return {
    status: res.statusCode ?? 0,
    statusText: res.statusMessage ?? '',
    headers: res.headers,
    discard: () => res.destroy(),
    drain: () => res.resume(),
    body: (start, end) => ({ start, end, stream: res }),
  };
}

function fromRaw(res: RawResponse): Answer {
  return {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
    discard: () => res.destroy(),
    drain: () => res.destroy(),
    body: (start, end) => ({ start, end, readInto: (sink) => res.readBody(sink), destroy: () => res.destroy() }),
  };
}

function header(answer: Answer, name: string): string | undefined {
  const value = answer.headers[name];
  return typeof value === 'string' ? value : undefined;
}

function validatorOf(answer: Answer): Validator {
  const validator: Validator = {};
  const etag = header(answer, 'etag');
  const lastModified = header(answer, 'last-modified');
  if (etag !== undefined) validator.etag = etag;
  if (lastModified !== undefined) validator.lastModified = lastModified;
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

function statusError(answer: Answer, url: URL): HttpStatusError {
  const { status } = answer;
  answer.drain();
  const hint =
    status === 401 || status === 403
      ? 'check the credentials (--header "Authorization: Bearer …") or that the URL has not expired'
      : status === 404
        ? 'check the URL'
        : undefined;
  return new HttpStatusError(`HTTP ${status} ${answer.statusText} from ${url.href}`.replace('  ', ' '), {
    url: url.href,
    status,
    hint,
    retryable: isRetryableStatus(status),
    retryAfterMs: parseRetryAfter(header(answer, 'retry-after')),
  });
}

export class HttpSource implements Source {
  readonly url: string;
  readonly label: string;
  private readonly origin: URL;
  private readonly client: HttpClient;
  /** The lean path for plain-HTTP ranges; off for good once a server sends a body it cannot delimit. */
  private readonly raw: RawHttpClient;
  private rawOff = false;
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
    this.raw = new RawHttpClient({ maxConnections: options.maxSockets });
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
    const answer = fromIncoming(res);
    const { status } = answer;
    const validator = validatorOf(answer);
    rejectEncoded(answer, url);
    if (status === 206) {
      const range = checkedRange(answer, url, start, end, undefined);
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
      const range = /\*\/(\d+)/.exec(header(answer, 'content-range') ?? '');
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
    throw statusError(answer, url);
  }

  async openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<RangeBody> {
    const answer = await this.requestRange(start, end, expect, signal);
    const { status } = answer;
    const url = this.target.url;
    const actual = validatorOf(answer);
    if (status === 206) {
      if (validatorChanged(expect.validator, actual)) {
        answer.discard();
        throw changed(url, expect.validator, actual);
      }
      rejectEncoded(answer, url);
      const range = parseContentRange(header(answer, 'content-range'));
      const sameVersion = Boolean(actual.etag ?? actual.lastModified) && !validatorChanged(expect.validator, actual);
      // Without a validator to say otherwise, another total means the file was replaced.
      if (range?.total !== undefined && range.total !== expect.size && !sameVersion) {
        answer.discard();
        throw changed(url, expect.validator, actual, `size ${expect.size} became ${range.total}`);
      }
      // A shorter range than asked is legal (RFC 9110 14.4): the engine asks for the rest.
      const checked = checkedRange(answer, url, start, end, expect.size);
      return answer.body(start, checked.end);
    }
    if (status === 200) {
      answer.discard();
      // With If-Range, a full answer means the validator no longer matches.
      if (validatorChanged(expect.validator, actual) || (!actual.etag && !actual.lastModified)) {
        throw changed(url, expect.validator, actual);
      }
      throw new BadResponseError(`${url.host} ignored the Range header of a chunk request (HTTP 200)`, {
        url: url.href,
      });
    }
    if (status === 416) {
      answer.drain();
      throw changed(url, expect.validator, actual, `range ${start}-${end - 1} is no longer satisfiable`);
    }
    throw statusError(answer, url);
  }

  private async requestRange(
    start: number,
    end: number,
    expect: ProbeExpectation,
    signal: AbortSignal,
  ): Promise<Answer> {
    const answer = await this.sendRange(start, end, expect, signal);
    const redirected = this.target.url.href !== this.origin.href;
    if (!redirected || !EXPIRED_URL.has(answer.status)) return answer;
    // A signed URL from a redirect has expired: ask the origin for a fresh one, once.
    answer.drain();
    await this.refreshTarget(signal);
    return this.sendRange(start, end, expect, signal);
  }

  /** One range request to the current target: the raw client for plain HTTP, else node:http. */
  private async sendRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<Answer> {
    const ifRange = ifRangeValue(expect.validator);
    const { url } = this.target;
    const headers: OutgoingHttpHeaders = {
      ...this.target.headers,
      range: `bytes=${start}-${end - 1}`,
      ...(ifRange && { 'if-range': ifRange }),
    };
    const stallTimeoutMs = this.options.stallTimeoutMs;
    if (!this.rawOff && url.protocol === 'http:' && this.client.proxyFor(url) === undefined) {
      const res = await this.raw.get({ url, headers: headerStrings(headers), signal, stallTimeoutMs });
      if (res.status !== 206 || res.contentLength !== undefined) return fromRaw(res);
      // A 206 without a length (chunked): node:http reads this server's ranges from now on.
      res.destroy();
      this.rawOff = true;
    }
    return fromIncoming(await this.client.request(url, { headers, signal, stallTimeoutMs }));
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
    const answer = fromIncoming(res);
    if (answer.status === 304) {
      answer.drain();
      return 'fresh';
    }
    if (answer.status === 200 || answer.status === 206) {
      answer.discard();
      // A server that ignores conditions still tells the version in its validators.
      const actual = validatorOf(answer);
      const same = (actual.etag ?? actual.lastModified) !== undefined && !validatorChanged(validator, actual);
      return same ? 'fresh' : 'changed';
    }
    throw statusError(answer, url);
  }

  close(): void {
    this.client.close();
    this.raw.close();
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
  answer: Answer,
  url: URL,
  start: number,
  end: number,
  size: number | undefined,
): ContentRange & { total: number } {
  const range = parseContentRange(header(answer, 'content-range'));
  const problem = rangeProblem(range, header(answer, 'content-length'), start, end, size);
  if (problem || !range || range.total === undefined) {
    answer.discard();
    throw new BadResponseError(
      `${url.host} answered bytes=${start}-${end - 1} with ${problem ?? 'a bad range'} (Content-Range "${header(answer, 'content-range') ?? '(none)'}")`,
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

function rejectEncoded(answer: Answer, url: URL): void {
  const encoding = header(answer, 'content-encoding');
  if (encoding && encoding !== 'identity') {
    answer.discard();
    // A compressed body's ranges are ranges of the compressed bytes: no retry changes that.
    throw new ContentEncodingError(`${url.host} sent Content-Encoding ${encoding} although identity was asked for`, {
      url: url.href,
      hint: 'the server (or a proxy) compresses this file; fetch it with another tool or URL',
    });
  }
}

/** node:http's header values as the raw client sends them. */
function headerStrings(headers: OutgoingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return out;
}

function lowerCaseKeys(headers: Record<string, string>): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
