// A test and benchmark origin: serves generated files over HTTP or HTTPS with Range,
// ETag/Last-Modified and If-Range, and can imitate an object store (first-byte latency,
// a per-connection rate cap) or a faulty server (resets, error bursts, stalls, lies).
// It counts every byte it serves, so tests can assert how much the origin sent.
import { createReadStream } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Bytes of a served file: in memory, or a file on disk (for multi-GiB benchmarks). */
export type OriginContent = Buffer | { file: string; size: number };

export interface OriginFile {
  content: OriginContent;
  /** ETag to send; null sends none. Default: derived from a version counter. */
  etag?: string | null;
  /** Last-Modified to send; null sends none. Default: a fixed date. */
  lastModified?: string | null;
}

/** What a fault hook may make the server do to one request. */
export type Fault =
  /** Destroy the connection after sending this many body bytes. */
  | { kind: 'reset'; afterBytes: number }
  /** Answer with this status (and headers) instead of the file. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Send this many body bytes, then nothing more, holding the connection open. */
  | { kind: 'stall'; afterBytes: number }
  /** Answer a ranged request with 200 and the whole file. */
  | { kind: 'ignore-range' }
  /** Send this Content-Range (null: none) with the bytes asked for. */
  | { kind: 'content-range'; value: string | null }
  /** Declare the full range, send only this many bytes and end the response cleanly. */
  | { kind: 'short-body'; bytes: number }
  /** Redirect this request elsewhere. */
  | { kind: 'redirect'; location: string; status?: number }
  /** Serve this response at this rate (bytes per second), as a congested connection. */
  | { kind: 'slow'; bytesPerSecond: number }
  /** Answer normally, but only once `until` settles: a test orders events around this request. */
  | { kind: 'hold'; until: Promise<unknown> };

export interface FaultContext {
  /** 1 for the first request the server received. */
  index: number;
  path: string;
  range: { start: number; end: number } | undefined;
  headers: IncomingMessage['headers'];
}

export interface OriginOptions {
  /** TLS key and certificate: serve HTTPS. */
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** Delay before each response's head, as an object store's first-byte latency. */
  firstByteLatencyMs?: number;
  /** Per-connection cap in bytes per second. */
  rateLimitBytesPerSecond?: number;
  /** Cap over all connections together, in bytes per second (an origin's egress link). */
  aggregateRateLimitBytesPerSecond?: number;
  /** false: ignore Range and always send 200 with the whole file. Default true. */
  acceptRanges?: boolean;
  /** Decides a fault for each request (undefined: serve normally). */
  fault?: (ctx: FaultContext) => Fault | undefined;
  /** Host name used in `url` (e.g. `localhost` vs `127.0.0.1` to make two hosts). */
  hostname?: string;
}

export interface RequestRecord {
  method: string;
  path: string;
  range: string | undefined;
  headers: IncomingMessage['headers'];
  status: number;
  /** performance.now() when the request arrived. */
  at: number;
}

const DEFAULT_LAST_MODIFIED = 'Wed, 01 Jan 2025 00:00:00 GMT';

export class OriginServer {
  private readonly server: http.Server;
  private readonly files = new Map<string, OriginFile & { version: number }>();
  private readonly redirects = new Map<string, { location: string; status: number }>();
  private readonly sockets = new Set<Socket>();
  private readonly buckets = new WeakMap<Socket, { nextFreeAt: number }>();
  private readonly sharedBucket = { nextFreeAt: 0 };
  private requestCount = 0;
  /** Body bytes written to clients, over all requests. */
  bytesServed = 0;
  readonly requests: RequestRecord[] = [];
  private port = 0;

  constructor(private readonly options: OriginOptions = {}) {
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      this.handle(req, res).catch(() => res.destroy());
    };
    this.server = options.tls ? https.createServer(options.tls, handler) : http.createServer(handler);
    this.server.keepAliveTimeout = 60_000;
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Base URL, e.g. http://127.0.0.1:41234 */
  /** Client connections open now (a client that closes its keep-alive sockets leaves none). */
  get openConnections(): number {
    return this.sockets.size;
  }

  get origin(): string {
    const scheme = this.options.tls ? 'https' : 'http';
    return `${scheme}://${this.options.hostname ?? '127.0.0.1'}:${this.port}`;
  }

  url(path: string): string {
    return `${this.origin}${path}`;
  }

  /** Serves `content` at `path`; calling it again replaces the file and changes its ETag. */
  setFile(path: string, file: OriginFile | OriginContent): void {
    const spec: OriginFile = Buffer.isBuffer(file) || 'file' in file ? { content: file } : file;
    const version = (this.files.get(path)?.version ?? 0) + 1;
    this.files.set(path, { ...spec, version });
  }

  /** The ETag the server currently sends for `path`. */
  currentEtag(path: string): string | undefined {
    const file = this.files.get(path);
    return file && this.etagOf(path, file);
  }

  redirect(path: string, location: string, status = 302): void {
    this.redirects.set(path, { location, status });
  }

  resetStats(): void {
    this.bytesServed = 0;
    this.requests.length = 0;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private etagOf(path: string, file: OriginFile & { version: number }): string | undefined {
    if (file.etag === null) return undefined;
    return file.etag ?? `"${Buffer.from(path).toString('hex').slice(0, 16)}-v${file.version}"`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const index = ++this.requestCount;
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      headers: req.headers,
      status: 0,
      at: performance.now(),
    };
    this.requests.push(record);
    const file = this.files.get(path);
    const size = file ? contentSize(file.content) : 0;
    const range = file ? parseRange(req.headers.range, size) : undefined;
    const fault = this.options.fault?.({ index, path, range, headers: req.headers });
    if (fault?.kind === 'hold') await fault.until.catch(() => undefined);

    if (this.options.firstByteLatencyMs) await sleep(this.options.firstByteLatencyMs);

    const redirect =
      fault?.kind === 'redirect' ? { location: fault.location, status: fault.status ?? 302 } : this.redirects.get(path);
    if (redirect) {
      record.status = redirect.status;
      res.writeHead(redirect.status, { location: redirect.location, 'content-length': 0 }).end();
      return;
    }
    if (fault?.kind === 'status') {
      record.status = fault.status;
      const body = fault.body ?? `injected ${fault.status}\n`;
      res.writeHead(fault.status, { 'content-length': Buffer.byteLength(body), ...fault.headers }).end(body);
      return;
    }
    if (!file) {
      record.status = 404;
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }

    const etag = this.etagOf(path, file);
    const lastModified = file.lastModified === null ? undefined : (file.lastModified ?? DEFAULT_LAST_MODIFIED);
    const headers: Record<string, string | number> = { 'accept-ranges': 'bytes' };
    if (etag) headers.etag = etag;
    if (lastModified) headers['last-modified'] = lastModified;

    const ifNoneMatch = req.headers['if-none-match'];
    const ifModifiedSince = req.headers['if-modified-since'];
    const notModified =
      ifNoneMatch !== undefined
        ? ifNoneMatch === etag
        : ifModifiedSince !== undefined && ifModifiedSince === lastModified;
    if (notModified) {
      record.status = 304;
      res.writeHead(304, headers).end();
      return;
    }

    const ifRange = req.headers['if-range'];
    const ifRangeHolds = ifRange === undefined || ifRange === etag || ifRange === lastModified;
    const useRange =
      range !== undefined && this.options.acceptRanges !== false && fault?.kind !== 'ignore-range' && ifRangeHolds;

    if (req.headers.range && !range && this.options.acceptRanges !== false) {
      record.status = 416;
      res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': 0 }).end();
      return;
    }

    let start = 0;
    let end = size;
    let status = 200;
    if (useRange) {
      start = range.start;
      end = range.end;
      status = 206;
      headers['content-range'] = `bytes ${start}-${end - 1}/${size}`;
      if (fault?.kind === 'content-range') {
        if (fault.value === null) delete headers['content-range'];
        else headers['content-range'] = fault.value;
      }
    }
    let sendEnd = end;
    headers['content-length'] = end - start;
    if (fault?.kind === 'short-body') {
      sendEnd = Math.min(end, start + fault.bytes);
      headers['content-length'] = sendEnd - start;
    }
    record.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const stopAt =
      fault?.kind === 'reset' || fault?.kind === 'stall' ? Math.min(sendEnd, start + fault.afterBytes) : sendEnd;
    const rate = fault?.kind === 'slow' ? fault.bytesPerSecond : this.options.rateLimitBytesPerSecond;
    await this.sendBody(res, file.content, start, stopAt, rate);
    if (fault?.kind === 'reset') {
      res.socket?.resetAndDestroy();
      return;
    }
    if (fault?.kind === 'stall') return; // hold the connection open, send nothing more
    res.end();
  }

  private async sendBody(
    res: ServerResponse,
    content: OriginContent,
    start: number,
    end: number,
    rate: number | undefined,
  ): Promise<void> {
    const socket = res.socket;
    const chunks: AsyncIterable<Buffer> = Buffer.isBuffer(content)
      ? sliceBuffer(content, start, end)
      : end > start
        ? createReadStream(content.file, { start, end: end - 1, highWaterMark: 256 * 1024 })
        : emptyIterable();
    for await (const chunk of chunks) {
      if (res.destroyed) return;
      if (rate && socket) {
        const bucket = this.buckets.get(socket) ?? { nextFreeAt: performanceNow() };
        this.buckets.set(socket, bucket);
        const now = performanceNow();
        bucket.nextFreeAt = Math.max(bucket.nextFreeAt, now) + (chunk.length / rate) * 1000;
        const wait = bucket.nextFreeAt - now - (chunk.length / rate) * 1000;
        if (wait > 1) await sleep(wait);
        // The client may have gone while this response waited its turn.
        if (res.destroyed) return;
      }
      const shared = this.options.aggregateRateLimitBytesPerSecond;
      if (shared) {
        const now = performanceNow();
        const cost = (chunk.length / shared) * 1000;
        this.sharedBucket.nextFreeAt = Math.max(this.sharedBucket.nextFreeAt, now) + cost;
        const wait = this.sharedBucket.nextFreeAt - now - cost;
        if (wait > 1) await sleep(wait);
        if (res.destroyed) return;
      }
      this.bytesServed += chunk.length;
      if (!res.write(chunk)) await waitForDrain(res);
    }
  }
}

function performanceNow(): number {
  return performance.now();
}

async function* sliceBuffer(buffer: Buffer, start: number, end: number): AsyncIterable<Buffer> {
  const slice = 64 * 1024;
  for (let at = start; at < end; at += slice) yield buffer.subarray(at, Math.min(end, at + slice));
}

async function* emptyIterable(): AsyncIterable<Buffer> {}

function waitForDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function contentSize(content: OriginContent): number {
  return Buffer.isBuffer(content) ? content.length : content.size;
}

/** Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; undefined if absent or unsatisfiable. */
function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  const match = header ? /^bytes=(\d*)-(\d*)$/.exec(header) : null;
  if (!match) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    start = Math.max(0, size - suffix);
    end = size;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size : Math.min(size, Number(match[2]) + 1);
  }
  return start < end && start < size ? { start, end } : undefined;
}
