// The node agent's HTTP server: serves blobs of this node's cache to peers, by digest only
// (`GET|HEAD /v1/blobs/:digest`, one Range), complete blobs from `blobs/sha256/` and the
// verified pieces of downloads in progress from `tmp/` (see partial-blobs.ts), plus
// /healthz (the process is up), /readyz (the control plane accepts this node: a refused token
// must not look healthy) and /metrics. The contract is docs/design/peers-and-pieces.md.
//
// Safety: a request names a digest that must be 64 lower-case hex characters before any
// path is built from it, so nothing outside the cache can be read. A blob being served is
// marked in use (the cache's in-use marker) so gc leaves it alone; the file is opened after
// the marker is written, so a blob removed before that is a 404, and one removed after it is
// still read whole through the open descriptor.
//
// Speed: plain node:http with keep-alive; a body is sent by a loop that reads the file in
// large chunks (1 MiB) into two buffers reused from a small pool and writes each to the
// socket, reading the next while the last is written: no allocation, no stream and no pipe
// per chunk, and a reader that is slow holds two buffers, no more (backpressure: a buffer
// is read into again only once the kernel took its last write). On a fleet cold start the
// leader's agent sends nearly every follower byte, so its CPU per byte bounds the fleet.
import { createHash, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ensureLayout, withBlobInUse } from '../cache/blob-store.js';
import { blobPath, cacheLayout, type CacheLayout } from '../cache/cache-root.js';
import { AgentMetrics, type RefusalReason } from './agent-metrics.js';
import { PartialBlobReader, rangeVerified, type PartialBlob } from './partial-blobs.js';
import { DEFAULTS } from '../core/defaults.js';

export const AGENT_SERVER_DEFAULTS = DEFAULTS.agent;

export interface AgentServerOptions {
  cacheRoot: string;
  /** With a token, blob requests must carry `Authorization: Bearer <token>`. */
  token?: string;
  maxUploads?: number;
  metrics?: AgentMetrics;
  readChunkBytes?: number;
  idleTimeoutMs?: number;
  /** What /readyz answers: ready, or why not (503). Default: always ready. */
  readiness?: () => Readiness;
}

/** Whether the agent does its job for the fleet, and why not (an error code and message). */
export type Readiness = { ready: true } | { ready: false; code: string; message: string };

const DIGEST = /^[0-9a-f]{64}$/;
const BLOBS_PREFIX = '/v1/blobs/';
/** Free read buffers kept for the next uploads; more are allocated when more are busy. */
const SPARE_BUFFERS = 16;

type Range = { start: number; end: number };

/** One open blob: complete, or a download in progress. */
interface OpenBlob {
  handle: FileHandle;
  size: number;
  partial: PartialBlob | undefined;
}

/** Parses a one-range `Range` header against `size`: the range, or 'invalid' (416). */
export function parseRange(header: string, size: number): Range | 'invalid' {
  const match = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return 'invalid';
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return 'invalid';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  if (start >= size) return 'invalid';
  if (match[2] === '') return { start, end: size - 1 };
  const last = Number(match[2]);
  if (last < start) return 'invalid';
  return { start, end: Math.min(last, size - 1) };
}

function isMissing(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export class AgentServer {
  readonly metrics: AgentMetrics;
  readonly layout: CacheLayout;
  private readonly server: http.Server;
  private readonly partials: PartialBlobReader;
  private readonly maxUploads: number;
  private readonly chunk: number;
  private readonly tokenHash: Buffer | undefined;
  private readonly readiness: () => Readiness;
  private inFlight = 0;
  private readonly drained = new Set<() => void>();
  /** Read buffers of `chunk` bytes no upload is using. */
  private readonly spare: Buffer[] = [];

  constructor(options: AgentServerOptions) {
    this.layout = cacheLayout(options.cacheRoot);
    this.metrics = options.metrics ?? new AgentMetrics();
    this.partials = new PartialBlobReader(this.layout);
    this.maxUploads = options.maxUploads ?? AGENT_SERVER_DEFAULTS.maxUploads;
    this.chunk = options.readChunkBytes ?? AGENT_SERVER_DEFAULTS.readChunkBytes;
    this.tokenHash = options.token ? createHash('sha256').update(options.token).digest() : undefined;
    this.readiness = options.readiness ?? (() => ({ ready: true }));
    this.server = http.createServer({ keepAlive: true }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.server.keepAliveTimeout = AGENT_SERVER_DEFAULTS.keepAliveTimeoutMs;
    this.server.headersTimeout = AGENT_SERVER_DEFAULTS.keepAliveTimeoutMs + 5_000;
    this.server.timeout = options.idleTimeoutMs ?? AGENT_SERVER_DEFAULTS.idleTimeoutMs;
  }

  /** Uploads being sent now. */
  get uploadsInFlight(): number {
    return this.inFlight;
  }

  /** Uploads the agent can still take (announced in heartbeats). */
  get freeUploadSlots(): number {
    return Math.max(0, this.maxUploads - this.inFlight);
  }

  /** Listens; resolves with the bound address (port 0 picks a free one). */
  async listen(host: string, port: number): Promise<AddressInfo> {
    // The in-use markers go to locks/: a cache that does not exist yet is created empty.
    await ensureLayout(this.layout);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting, lets uploads in flight finish for up to `graceMs`, then cuts the rest. */
  async close(graceMs: number = AGENT_SERVER_DEFAULTS.closeGraceMs): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.drained.add(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
    }
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    const method = req.method ?? 'GET';
    const readOnly = method === 'GET' || method === 'HEAD';
    if (path === '/healthz' || path === '/readyz' || path === '/metrics') {
      if (!readOnly) return this.refuse(req, res, 405, 'LOOM_ERR_VALIDATION', `${method} not allowed`, 'bad_request');
      if (path === '/healthz') return this.json(req, res, 200, { ok: true, uploadsInFlight: this.inFlight });
      if (path === '/readyz') {
        const readiness = this.readiness();
        return readiness.ready
          ? this.json(req, res, 200, { ok: true })
          : this.json(req, res, 503, { ok: false, error: { code: readiness.code, message: readiness.message } });
      }
      const body = await this.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    if (!path.startsWith(BLOBS_PREFIX))
      return this.refuse(req, res, 404, 'LOOM_ERR_NOT_FOUND', `no route ${method} ${path}`, 'not_found');
    if (this.tokenHash && !this.authorized(req.headers.authorization))
      return this.refuse(req, res, 401, 'LOOM_ERR_UNAUTHORIZED', 'missing or wrong bearer token', 'unauthorized', {
        'www-authenticate': 'Bearer',
      });
    if (!readOnly)
      return this.refuse(req, res, 405, 'LOOM_ERR_VALIDATION', `${method} not allowed`, 'bad_request', {
        allow: 'GET, HEAD',
      });
    const digest = path.slice(BLOBS_PREFIX.length);
    if (!DIGEST.test(digest))
      return this.refuse(
        req,
        res,
        400,
        'LOOM_ERR_VALIDATION',
        'invalid digest: must be 64 lower-case hex digits (a sha256)',
        'bad_request',
      );
    const upload = method === 'GET';
    if (upload) {
      // Reserved before any await, so concurrent requests cannot overshoot the limit.
      if (this.inFlight >= this.maxUploads)
        return this.refuse(
          req,
          res,
          503,
          undefined,
          `too many uploads (${this.maxUploads}); try another peer or again shortly`,
          'busy',
          { 'retry-after': '1' },
        );
      this.inFlight++;
      this.metrics.uploadsInFlight.inc();
    }
    try {
      await withBlobInUse(this.layout, digest, () => this.serveBlob(req, res, digest));
    } finally {
      if (upload) {
        this.inFlight--;
        this.metrics.uploadsInFlight.dec();
        if (this.inFlight === 0) for (const resolve of this.drained) resolve();
      }
    }
  }

  private authorized(header: string | undefined): boolean {
    const presented = header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
    // Hashing first gives equal lengths, which timingSafeEqual needs, whatever was sent.
    const actual = createHash('sha256')
      .update(presented ?? '')
      .digest();
    return presented !== undefined && timingSafeEqual(actual, this.tokenHash!);
  }

  /** Opens the complete blob, else the partial download; undefined when the cache has neither. */
  private async openBlob(digest: string): Promise<OpenBlob | undefined> {
    // Twice at most: a download that finishes (its .part moved under its digest, then its
    // pieces file removed) after the look for the complete blob, before its pieces file is
    // read or its .part opened, has just become a complete blob: looked for again. Answering
    // 404 there dropped a peer listed with every piece (a fleet cold start, a loaded machine).
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await fsp.open(blobPath(this.layout, digest), 'r');
        const stat = await handle.stat().catch(async (err: unknown) => {
          await handle.close();
          throw err;
        });
        if (stat.isFile()) return { handle, size: stat.size, partial: undefined };
        await handle.close();
        return undefined;
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
      const partial = await this.partials.read(digest);
      if (!partial) continue;
      try {
        const handle = await fsp.open(partial.partPath, 'r');
        return { handle, size: partial.size, partial };
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
    }
    return undefined;
  }

  private async serveBlob(req: IncomingMessage, res: ServerResponse, digest: string): Promise<void> {
    const blob = await this.openBlob(digest);
    if (!blob) return this.refuse(req, res, 404, 'LOOM_ERR_NOT_FOUND', `blob ${digest} is not here`, 'not_found');
    try {
      const header = req.headers.range;
      let range: Range | undefined;
      if (header !== undefined) {
        const parsed = parseRange(header, blob.size);
        if (parsed === 'invalid')
          return this.refuse(
            req,
            res,
            416,
            'LOOM_ERR_VALIDATION',
            `range "${header.slice(0, 100)}" is malformed or outside the blob (${blob.size} bytes; one range only)`,
            'range',
            { 'content-range': `bytes */${blob.size}` },
          );
        range = parsed;
      }
      const start = range?.start ?? 0;
      const end = range?.end ?? blob.size - 1;
      if (blob.partial) {
        // The .part file may be shorter than the blob while it is written; checking its length
        // too means a response never comes up short.
        const available = (await blob.handle.stat()).size;
        if (!rangeVerified(blob.partial, start, end) || end >= available)
          return this.refuse(req, res, 404, 'LOOM_ERR_NOT_FOUND', 'pieces not yet here', 'pieces_missing');
      }
      const length = end - start + 1;
      const headers: Record<string, string | number> = {
        'content-type': 'application/octet-stream',
        'content-length': length,
        'accept-ranges': 'bytes',
        etag: `"${digest}"`,
        'x-loom-complete': blob.partial ? '0' : '1',
      };
      if (range) headers['content-range'] = `bytes ${start}-${end}/${blob.size}`;
      res.writeHead(range ? 206 : 200, headers);
      if (req.method === 'HEAD' || length === 0) {
        res.end();
        return;
      }
      await this.sendBody(res, blob.handle, start, end + 1);
    } finally {
      await blob.handle.close().catch(() => undefined);
    }
  }

  /**
   * Sends bytes [start, end) of the file: each chunk is read into one of two buffers while
   * the other is being written. A peer that goes away mid-body ends it: nothing to do but stop.
   */
  private async sendBody(res: ServerResponse, handle: FileHandle, start: number, end: number): Promise<void> {
    const buffers = [this.takeBuffer(), this.takeBuffer()] as const;
    // Each buffer's last write, settled once the socket has taken it (true) or failed (false).
    const writes: [Promise<boolean>, Promise<boolean>] = [Promise.resolve(true), Promise.resolve(true)];
    let gone = false;
    const closed = new Promise<boolean>((resolve) =>
      res.once('close', () => {
        gone = true;
        resolve(false);
      }),
    );
    const served = this.metrics.bytesServed;
    let ok = true;
    try {
      for (let pos = start, i = 0; pos < end && ok; i ^= 1) {
        // The buffer is read into again only once its last write is done with it.
        ok = await Promise.race([writes[i]!, closed]);
        if (!ok || gone) break;
        const buffer = buffers[i]!;
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, end - pos), pos);
        if (bytesRead === 0) throw new Error(`the file ended at byte ${pos}, before byte ${end}`);
        if (gone) break;
        pos += bytesRead;
        served.inc(bytesRead);
        writes[i] = new Promise<boolean>((resolve) =>
          res.write(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead), (err) => resolve(!err)),
        );
      }
      ok = ok && !gone && (await Promise.race([Promise.all(writes).then((w) => w.every(Boolean)), closed]));
      if (ok) res.end();
    } catch (err) {
      ok = false;
      throw err;
    } finally {
      // A buffer whose write may still be pending (the peer went away) is left to the GC.
      if (ok) for (const buffer of buffers) this.giveBuffer(buffer);
    }
  }

  private takeBuffer(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.chunk);
  }

  private giveBuffer(buffer: Buffer): void {
    if (this.spare.length < SPARE_BUFFERS) this.spare.push(buffer);
  }

  private refuse(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    code: string | undefined,
    message: string,
    reason: RefusalReason,
    headers: Record<string, string> = {},
  ): void {
    this.metrics.refusals.inc({ reason });
    this.json(req, res, status, { error: { ...(code && { code }), message } }, headers);
  }

  private json(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    value: unknown,
    headers: Record<string, string> = {},
  ): void {
    const body = JSON.stringify(value);
    res.writeHead(status, {
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  /** An unexpected failure (a bug or an I/O error): 500 if nothing was sent yet, else cut. */
  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy(err as Error);
      return;
    }
    const body = JSON.stringify({ error: { code: 'LOOM_ERR_INTERNAL', message: 'internal error' } });
    res.writeHead(500, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}
