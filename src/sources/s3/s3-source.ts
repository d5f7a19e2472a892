// An S3 object as a Source for the engine: the probe is a signed ranged GET of the first
// range (like the AWS CRT client, no HEAD), every range a signed GET of its own with
// If-Match on the ETag, and each answer checked against the range contract.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { BadResponseError, InvalidUrlError, SourceChangedError } from '../../core/errors.js';
import { parseContentRange } from '../http.js';
import type { ProbeExpectation, ProbeResult, RangeBody, Source, Validator } from '../source.js';
import { S3Requester, type S3Options } from './s3-requester.js';
import { parseS3Uri, type S3Location } from './s3-uri.js';

export class S3Source implements Source {
  readonly url: string;
  readonly label: string;
  readonly location: S3Location;
  readonly requester: S3Requester;

  constructor(uri: string, options: S3Options = {}) {
    this.location = parseS3Uri(uri);
    if (this.location.key === '' || this.location.key.endsWith('/')) {
      throw new InvalidUrlError(`${uri} names a prefix, not an object`, {
        hint: 'fetch one object (s3://bucket/key) or pull the prefix',
      });
    }
    this.url = uri;
    this.label = `s3://${this.location.bucket}`;
    this.requester = new S3Requester(options);
  }

  async probe(firstRange: readonly [number, number], signal: AbortSignal): Promise<ProbeResult> {
    const [start, end] = firstRange;
    const res = await this.requester.send({
      method: 'GET',
      location: this.location,
      headers: { range: `bytes=${start}-${end - 1}` },
      signal,
      presigned: true,
      passStatuses: [416],
    });
    const finalUrl = this.requester.urlOf(this.location).href;
    const validator = validatorOf(res);
    const status = res.statusCode ?? 0;
    if (status === 206) {
      const range = parseContentRange(res.headers['content-range']);
      if (range?.total === 0 && start === 0) {
        // Some stores answer a range of an empty object with "bytes 0-0/0" and no body.
        res.resume();
        return {
          size: 0,
          acceptsRanges: true,
          validator,
          body: { start: 0, end: 0, stream: Readable.from([]) },
          finalUrl,
        };
      }
      if (!range || range.total === undefined || range.start !== start || range.end > end || range.end > range.total) {
        res.destroy();
        throw this.badRange(start, end, res);
      }
      return {
        size: range.total,
        acceptsRanges: true,
        validator,
        body: { start, end: range.end, stream: res },
        finalUrl,
      };
    }
    if (status === 200) {
      // S3 answers a range over an empty object with the whole (empty) object.
      const size = Number(res.headers['content-length']);
      if (!Number.isSafeInteger(size)) {
        res.destroy();
        throw new BadResponseError(`${this.label} answered without a Content-Length`, { url: this.url });
      }
      return { size, acceptsRanges: false, validator, body: { start: 0, end: size, stream: res }, finalUrl };
    }
    if (status !== 416) {
      res.destroy();
      throw this.badRange(start, end, res);
    }
    // 416: only an empty object cannot serve its first byte.
    res.resume();
    const total = /\*\/(\d+)/.exec(String(res.headers['content-range'] ?? ''));
    if (start === 0 && (!total || Number(total[1]) === 0)) {
      return {
        size: 0,
        acceptsRanges: true,
        validator,
        body: { start: 0, end: 0, stream: Readable.from([]) },
        finalUrl,
      };
    }
    throw new SourceChangedError(`${this.url} is shorter than byte ${start}`, {
      url: this.url,
      hint: 'the object changed; rerun to fetch the new version',
    });
  }

  async openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<RangeBody> {
    const etag = expect.validator.etag;
    const res = await this.requester.send({
      method: 'GET',
      location: this.location,
      headers: { range: `bytes=${start}-${end - 1}`, ...(etag && { 'if-match': etag }) },
      signal,
      presigned: true,
      passStatuses: [412, 416],
    });
    const status = res.statusCode ?? 0;
    const actual = validatorOf(res);
    if (status === 412 || status === 416 || (etag && actual.etag && actual.etag !== etag)) {
      res.destroy();
      throw new SourceChangedError(
        `${this.url} changed during the download (ETag ${etag ?? '(none)'} no longer current)`,
        {
          url: this.url,
          expected: etag,
          actual: actual.etag,
          hint: 'rerun to fetch the new version',
        },
      );
    }
    const range = parseContentRange(res.headers['content-range']);
    const length = res.headers['content-length'];
    if (
      status !== 206 ||
      !range ||
      range.start !== start ||
      range.end !== end ||
      (range.total !== undefined && range.total !== expect.size) ||
      (length !== undefined && Number(length) !== end - start)
    ) {
      res.destroy();
      throw this.badRange(start, end, res);
    }
    return { start, end, stream: res };
  }

  async revalidate(validator: Validator, signal: AbortSignal, timeoutMs: number): Promise<'fresh' | 'changed'> {
    if (!validator.etag) return 'changed';
    const res = await this.requester.send(
      { method: 'HEAD', location: this.location, headers: { 'if-none-match': validator.etag }, signal },
      timeoutMs,
    );
    res.resume();
    if (res.statusCode === 304) return 'fresh';
    return res.headers.etag === validator.etag ? 'fresh' : 'changed';
  }

  private badRange(start: number, end: number, res: IncomingMessage): BadResponseError {
    return new BadResponseError(
      `${this.label} answered bytes=${start}-${end - 1} with HTTP ${res.statusCode ?? 0} and Content-Range "${res.headers['content-range'] ?? '(none)'}"`,
      { url: this.url },
    );
  }

  close(): void {
    this.requester.close();
  }
}

function validatorOf(res: IncomingMessage): Validator {
  const validator: Validator = {};
  if (typeof res.headers.etag === 'string') validator.etag = res.headers.etag;
  if (typeof res.headers['last-modified'] === 'string') validator.lastModified = res.headers['last-modified'];
  return validator;
}

/**
 * The S3 source for `s3://bucket/key`. Takes resolved fetch options as they are: their
 * `workers` sizes the socket pool, their stall timeout and CA files apply.
 */
export function s3SourceFor(uri: string, options: S3Options & { workers?: number } = {}): S3Source {
  const { workers, ...s3 } = options;
  return new S3Source(uri, { ...(workers !== undefined && { maxSockets: workers }), ...s3 });
}
