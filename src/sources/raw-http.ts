// The lean data path for plain-HTTP range bodies: a keep-alive connection pool over
// `net.Socket`s opened with the `onread` option, so the kernel's bytes land straight in the
// caller's buffers (the download's write slabs): no allocation per read, no stream machinery
// per chunk, no parser callbacks per header. It parses one response head per request and
// reads a Content-Length body; anything else (chunked bodies, TLS, redirects, an origin's
// probes, proxies) stays with node:http (a peer's probe comes here too, read through
// bodyStream). Measured on this machine: 0.45 s of user CPU per GiB for a
// whole `loom fetch --no-cache` against 1.48 s through node:http (README, "Benchmarks").
import net from 'node:net';
import { Readable } from 'node:stream';
import { cancelled, NetworkError, StallError, UsageError } from '../core/errors.js';
import { describeTransportError } from './http-retry.js';
import type { BodySink } from './source.js';

export interface RawResponse {
  status: number;
  statusText: string;
  /** Header names in lower case; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Body length from Content-Length; undefined when the body is not length-delimited. */
  contentLength: number | undefined;
  /** Reads the body into `sink`; resolves when it is all there (or the sink stopped it). */
  readBody(sink: BodySink): Promise<void>;
  /** Drops the response and its connection without reading the body. */
  destroy(): void;
}

export interface RawRequest {
  url: URL;
  /** Sent as given, after Host; names and values are checked (no CR, LF or NUL). */
  headers: Record<string, string>;
  signal?: AbortSignal;
  /** Abort when no byte arrives for this long, and a connection not made within it. */
  stallTimeoutMs: number;
  /**
   * Abort when the whole response head has not arrived this long after the request was sent
   * (a server trickling its head a byte at a time resets the stall timer at every byte).
   */
  headTimeoutMs?: number;
}

export interface RawHttpClientOptions {
  /** Connections per host:port at most; a request beyond them waits for one (like http.Agent). */
  maxConnections: number;
}

/** A response this client does not read (no Content-Length): the caller falls back. */
export class UnsupportedResponse extends Error {}

/** The largest response head read. */
const HEAD_BUFFER = 64 * 1024;
/**
 * A connection's scratch starts this small and grows (up to HEAD_BUFFER) only for a larger
 * head: heads are a few hundred bytes, and 64 KiB each was 4 MiB of RSS at 64 connections.
 */
const SCRATCH_START = 16 * 1024;
/** A read into scratch while the sink has no room: small, as it is copied. */
const SCRATCH_READ = 4 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const BAD_VALUE = /[\r\n\0]/;

type Phase = 'idle' | 'head' | 'held' | 'body';

/** One keep-alive connection; one request at a time. */
class RawConnection {
  readonly socket: net.Socket;
  private scratch = Buffer.allocUnsafeSlow(SCRATCH_START);
  private scratchUsed = 0;
  private phase: Phase = 'idle';
  private sink: BodySink | undefined;
  private remaining = 0;
  private onHead: ((head: Buffer, bodyStart: number) => void) | undefined;
  private onBodyDone: (() => void) | undefined;
  private onFailure: ((err: Error) => void) | undefined;
  private failure: Error | undefined;
  /** The server said it closes after this response (Connection: close, HTTP/1.0). */
  reusable = true;
  /** Requests sent on this connection. */
  requests = 0;
  /** Whether any byte of the current request's response has arrived. */
  answered = false;
  /** Pending after a body until the socket has been read once more (see finishBody). */
  private settling: Promise<void> | undefined;

  constructor(
    private readonly where: string,
    port: number,
    host: string,
    private stallTimeoutMs: number,
    onGone: () => void,
  ) {
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n, buf) => this.received(n, buf) },
    });
    // A socket's timeout runs while it connects too: a host that drops SYNs is caught here.
    this.socket.setTimeout(stallTimeoutMs, () =>
      this.fail(
        this.socket.connecting
          ? new StallError(`no connection to ${where} within ${this.stallTimeoutMs} ms`)
          : new StallError(`no data from ${where} for ${this.stallTimeoutMs} ms`),
      ),
    );
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('close', () => {
      this.fail(new NetworkError(`${where} closed the connection`));
      onGone();
    });
  }

  get idle(): boolean {
    return this.phase === 'idle' && !this.failure && !this.socket.destroyed;
  }

  setStallTimeout(ms: number): void {
    if (ms === this.stallTimeoutMs) return;
    this.stallTimeoutMs = ms;
    this.socket.setTimeout(ms);
  }

  /** Sends a request; resolves with the response head once it has arrived (within `headTimeoutMs`). */
  send(request: string, headTimeoutMs?: number): Promise<{ head: Buffer; bodyStart: number }> {
    if (this.failure) return Promise.reject(this.failure);
    this.phase = 'head';
    this.scratchUsed = 0;
    this.requests++;
    this.answered = false;
    return new Promise((resolve, reject) => {
      const late =
        headTimeoutMs === undefined
          ? undefined
          : setTimeout(
              () =>
                this.fail(new StallError(`no complete response head from ${this.where} within ${headTimeoutMs} ms`)),
              headTimeoutMs,
            );
      this.onHead = (head, bodyStart) => {
        clearTimeout(late);
        resolve({ head, bodyStart });
      };
      this.onFailure = (err) => {
        clearTimeout(late);
        reject(err);
      };
      this.socket.write(request);
      this.socket.resume();
    });
  }

  /** Reads `length` body bytes into `sink`; those from `pendingFrom` in scratch came with the head. */
  readBody(sink: BodySink, length: number, pendingFrom: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    this.sink = sink;
    this.remaining = length;
    return new Promise((resolve, reject) => {
      this.onBodyDone = resolve;
      this.onFailure = reject;
      this.phase = 'body';
      if (length === 0) {
        this.finishBody();
        return;
      }
      // Bytes of the body that came with the head: copied once, then reads go to the sink.
      const early = Buffer.from(this.scratch.subarray(pendingFrom, this.scratchUsed));
      this.scratchUsed = 0;
      if (this.deliver(early)) this.socket.resume();
    });
  }

  /**
   * Whether this idle connection may carry the next request: false when the server turned
   * out to have sent more than the last body (the connection failed meanwhile).
   */
  async usable(): Promise<boolean> {
    if (this.settling) await this.settling;
    this.settling = undefined;
    return this.idle;
  }

  destroy(): void {
    this.reusable = false;
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.reusable = false;
    this.socket.destroy();
    const reject = this.onFailure;
    this.onFailure = undefined;
    if (this.phase !== 'idle') reject?.(err);
  }

  /**
   * The buffer for the next read. Node asks for it right after each read, before the
   * reading pauses or resumes, so it is chosen before the bytes are due: whoever receives
   * them checks where they landed.
   */
  private nextBuffer(): Buffer {
    if (this.phase === 'body' && this.sink) {
      const region = this.sink.region();
      // Never ask for more than the body holds: the bytes after it belong to no one.
      if (region) return region.length > this.remaining ? region.subarray(0, this.remaining) : region;
      // No room in the sink (its slabs are all being written): the read after the pause
      // goes here and is copied over, so keep it small; the next one goes to a slab again.
      return this.scratch.subarray(0, SCRATCH_READ);
    }
    return this.scratchUsed < this.scratch.length ? this.scratch.subarray(this.scratchUsed) : this.scratch;
  }

  /** The `onread` callback: `n` bytes were read into `bytes`. Returns false to pause. */
  private received(n: number, bytes: Uint8Array): boolean {
    if (n > 0) this.answered = true;
    if (this.phase === 'body') {
      if (bytes.buffer === this.scratch.buffer) {
        // Read into scratch (the sink had no room): copy it over.
        return this.deliver(this.scratch.subarray(bytes.byteOffset, bytes.byteOffset + n));
      }
      return this.settle(n) === 'done' || this.readyForMore();
    }
    // Head bytes belong at scratchUsed; the buffer was chosen at the last read, maybe with
    // the scratch filled differently then (a small body that came whole with its head).
    const at = bytes.buffer === this.scratch.buffer ? bytes.byteOffset : -1;
    if (at !== this.scratchUsed) {
      if (this.scratchUsed + n > this.scratch.length && !this.growScratch(this.scratchUsed + n)) {
        this.fail(new NetworkError(`response head from ${this.where} larger than 64 KiB`));
        return false;
      }
      if (at === -1) Buffer.from(bytes.buffer, bytes.byteOffset, n).copy(this.scratch, this.scratchUsed);
      else this.scratch.copyWithin(this.scratchUsed, at, at + n);
    }
    if (this.phase === 'head') return this.receivedHead(n);
    // Bytes while held are the body's first, kept in scratch for readBody; bytes while idle
    // are a server talking out of turn (more than its Content-Length): the connection is done.
    if (this.phase === 'held') {
      this.scratchUsed += n;
      return false;
    }
    this.fail(new NetworkError(`${this.where} sent bytes after the end of a response`));
    return false;
  }

  private receivedHead(n: number): boolean {
    this.scratchUsed += n;
    for (;;) {
      const end = this.scratch.subarray(0, this.scratchUsed).indexOf(HEAD_END);
      if (end === -1) {
        if (this.scratchUsed === this.scratch.length && !this.growScratch(this.scratchUsed + 1))
          this.fail(new NetworkError(`response head from ${this.where} larger than 64 KiB`));
        return true;
      }
      const bodyStart = end + HEAD_END.length;
      // An informational answer (103 Early Hints) precedes the real one: skip it.
      if (/^HTTP\/1\.[01] 1\d\d /.test(this.scratch.toString('latin1', 0, Math.min(end, 16)))) {
        this.scratch.copy(this.scratch, 0, bodyStart, this.scratchUsed);
        this.scratchUsed -= bodyStart;
        continue;
      }
      // Hold the rest until the caller decides what to do with the body.
      this.phase = 'held';
      const onHead = this.onHead;
      this.onHead = undefined;
      onHead?.(Buffer.from(this.scratch.subarray(0, end)), bodyStart);
      return false;
    }
  }

  /**
   * Makes room for `needed` bytes of head (and the body bytes that came with it) in scratch,
   * keeping what it holds; false when that is more than HEAD_BUFFER. A read already headed
   * for the old scratch is copied over by received(), as it no longer lands at scratchUsed.
   */
  private growScratch(needed: number): boolean {
    if (needed > HEAD_BUFFER) return false;
    const grown = Buffer.allocUnsafeSlow(Math.min(HEAD_BUFFER, Math.max(needed, 2 * this.scratch.length)));
    this.scratch.copy(grown, 0, 0, this.scratchUsed);
    this.scratch = grown;
    return true;
  }

  /** Copies bytes that landed elsewhere into the sink's regions. Returns false to pause. */
  private deliver(bytes: Buffer): boolean {
    let offset = 0;
    while (offset < bytes.length && this.phase === 'body') {
      const region = this.sink!.region();
      if (!region) {
        this.keepUntilReady(bytes.subarray(offset));
        return false;
      }
      const length = Math.min(region.length, bytes.length - offset, this.remaining);
      bytes.copy(region, 0, offset, offset + length);
      offset += length;
      if (this.settle(length) === 'done') {
        // Bytes past the body (more than its Content-Length, read with its end): whatever
        // they are, they are no answer to a request of ours, and the next response on this
        // connection could not be told from them. The body is whole; the connection goes.
        if (offset < bytes.length && this.reusable)
          this.fail(new NetworkError(`${this.where} sent bytes after the end of a response`));
        return !this.failure;
      }
    }
    return this.phase === 'body' ? this.readyForMore() : true;
  }

  /** Keeps bytes the sink had no room for, and delivers them once it has. */
  private keepUntilReady(rest: Buffer): void {
    const kept = Buffer.from(rest);
    this.whenReady(() => {
      if (this.deliver(kept)) this.socket.resume();
    });
  }

  /** Whether the sink has room now; if not, reading resumes when it has. */
  private readyForMore(): boolean {
    if (this.sink!.region()) return true;
    this.whenReady(() => this.socket.resume());
    return false;
  }

  private whenReady(then: () => void): void {
    this.sink!.ready().then(
      () => {
        if (this.phase === 'body') then();
      },
      (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** Hands `n` bytes to the sink: 'done' when the body is complete or no more is wanted. */
  private settle(n: number): 'more' | 'done' {
    this.remaining -= n;
    const wanted = this.sink!.commit(n);
    if (this.remaining === 0) {
      // The connection stays readable while idle: it must notice the server closing it.
      this.finishBody();
      return 'done';
    }
    if (!wanted) {
      // The caller took what it needed (the back of the range went elsewhere).
      this.reusable = false;
      this.finishBody();
      this.socket.destroy();
      return 'done';
    }
    return 'more';
  }

  private finishBody(): void {
    this.phase = 'idle';
    // Bytes a server sent past the body may still be waiting in the kernel: the connection is
    // reused only once a read had the chance to take them (they fail it, being out of turn).
    this.settling = afterNextRead();
    this.sink = undefined;
    const done = this.onBodyDone;
    this.onBodyDone = undefined;
    this.onFailure = undefined;
    this.socket.resume();
    done?.();
  }
}

/** The connections to one host:port. */
interface HostPool {
  idle: RawConnection[];
  open: number;
  /** Requests waiting for a connection, first come first served. */
  waiting: Array<() => void>;
}

/** Keep-alive connections per host:port, each used by one request at a time. */
export class RawHttpClient {
  private readonly pools = new Map<string, HostPool>();

  constructor(private readonly options: RawHttpClientOptions = { maxConnections: Infinity }) {}

  /** Sends a GET; resolves with the head, the body waiting to be read. Plain http:// only. */
  async get(request: RawRequest): Promise<RawResponse> {
    const { url, signal } = request;
    if (url.protocol !== 'http:') throw new UnsupportedResponse(`raw client reads http:// only, not ${url.protocol}`);
    const text = requestText(url, request.headers);
    if (signal?.aborted) throw cancelled();
    for (let attempt = 0; ;) {
      const connection = await this.acquire(url, request.stallTimeoutMs, signal);
      if (connection.requests > 0) {
        const usable = await connection.usable();
        if (signal?.aborted) {
          if (usable) this.put(url.host, connection);
          else connection.destroy();
          throw cancelled();
        }
        if (!usable) {
          // Its server sent bytes past its last body: dropped, and the next one is taken.
          connection.destroy();
          continue;
        }
      }
      const onAbort = (): void => connection.destroy();
      signal?.addEventListener('abort', onAbort, { once: true });
      const release = (): void => signal?.removeEventListener('abort', onAbort);
      let head: { head: Buffer; bodyStart: number };
      try {
        head = await connection.send(text, request.headTimeoutMs);
      } catch (err) {
        release();
        if (signal?.aborted) throw cancelled();
        // A kept-alive connection the server closed as we reused it: one try on a new
        // connection, as nothing of this request was answered. The other idle ones, kept
        // as long, are likely closed too.
        const stale = connection.requests > 1 && !connection.answered && !(err instanceof StallError);
        if (stale && attempt++ === 0) {
          this.dropIdle(url.host);
          continue;
        }
        throw describeTransportError(err, { url });
      }
      let parsed: ParsedHead;
      try {
        parsed = parseHead(head.head, url.host);
      } catch (err) {
        connection.destroy();
        release();
        throw err;
      }
      if (!parsed.keepAlive) connection.reusable = false;
      // Once its body is read the connection may be back in the pool, serving another
      // request: destroying this response then must not touch it.
      let read = false;
      return {
        status: parsed.status,
        statusText: parsed.statusText,
        headers: parsed.headers,
        contentLength: parsed.contentLength,
        readBody: async (sink) => {
          if (parsed.contentLength === undefined) {
            connection.destroy();
            release();
            throw new UnsupportedResponse('response body is not length-delimited');
          }
          try {
            await connection.readBody(sink, parsed.contentLength, head.bodyStart);
            read = true;
            if (connection.reusable && connection.idle) this.put(url.host, connection);
            else connection.destroy();
          } catch (err) {
            connection.destroy();
            throw signal?.aborted ? cancelled() : describeTransportError(err, { url });
          } finally {
            release();
          }
        },
        destroy: () => {
          if (!read) connection.destroy();
          release();
        },
      };
    }
  }

  /** An idle connection, a new one within the limit, or the next one freed. */
  private acquire(url: URL, stallTimeoutMs: number, signal: AbortSignal | undefined): Promise<RawConnection> {
    const key = url.host;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { idle: [], open: 0, waiting: [] };
      this.pools.set(key, pool);
    }
    const hostPool = pool;
    const tryTake = (): RawConnection | undefined => {
      while (hostPool.idle.length) {
        const connection = hostPool.idle.pop()!;
        if (connection.idle) {
          connection.setStallTimeout(stallTimeoutMs);
          return connection;
        }
      }
      if (hostPool.open >= this.options.maxConnections) return undefined;
      hostPool.open++;
      const port = Number(url.port || 80);
      // URL keeps IPv6 literals bracketed; net.connect wants them bare.
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
      return new RawConnection(url.host, port, host, stallTimeoutMs, () => this.gone(key, hostPool));
    };
    const now = tryTake();
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const at = hostPool.waiting.indexOf(wake);
        if (at !== -1) hostPool.waiting.splice(at, 1);
        reject(cancelled());
      };
      const wake = (): void => {
        const connection = tryTake();
        if (!connection) {
          hostPool.waiting.unshift(wake);
          return;
        }
        signal?.removeEventListener('abort', onAbort);
        resolve(connection);
      };
      hostPool.waiting.push(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private put(key: string, connection: RawConnection): void {
    const pool = this.pools.get(key);
    if (!pool) {
      connection.destroy();
      return;
    }
    pool.idle.push(connection);
    pool.waiting.shift()?.();
  }

  private gone(key: string, pool: HostPool): void {
    pool.open--;
    pool.idle = pool.idle.filter((c) => c.idle);
    pool.waiting.shift()?.();
    if (pool.open === 0 && pool.waiting.length === 0 && this.pools.get(key) === pool) this.pools.delete(key);
  }

  private dropIdle(key: string): void {
    const pool = this.pools.get(key);
    if (!pool) return;
    const idle = pool.idle;
    pool.idle = [];
    for (const connection of idle) connection.destroy();
  }

  close(): void {
    for (const pool of this.pools.values()) for (const connection of pool.idle) connection.destroy();
  }
}

/**
 * Resolves once the event loop has gone through a poll phase (two check phases from now):
 * bytes already in a socket's kernel buffer have then been read, whether the caller runs in
 * a read callback (the loop reads on in this poll) or after one (the next poll reads).
 */
function afterNextRead(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

/** The request's bytes; a header that could smuggle a second request is refused. */
function requestText(url: URL, headers: Record<string, string>): string {
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name) || BAD_VALUE.test(value))
      throw new UsageError(`invalid request header ${JSON.stringify(name)}`);
    lines.push(`${name}: ${value}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

interface ParsedHead {
  status: number;
  statusText: string;
  headers: Record<string, string>;
  contentLength: number | undefined;
  keepAlive: boolean;
}

function parseHead(head: Buffer, where: string): ParsedHead {
  const lines = head.toString('latin1').split('\r\n');
  const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (!statusLine) {
    throw new NetworkError(`${where} answered with no HTTP/1.x status line: "${(lines[0] ?? '').slice(0, 80)}"`);
  }
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const chunked = headers['transfer-encoding'] !== undefined;
  const length = headers['content-length'];
  // Two Content-Length values (joined above) are not a length this client trusts.
  const contentLength = !chunked && length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
  const connection = (headers.connection ?? '').toLowerCase();
  const keepAlive = statusLine[1] === '1' ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
  return { status: Number(statusLine[2]), statusText: statusLine[3] ?? '', headers, contentLength, keepAlive };
}

/** Buffers a body read as a stream is read into (only where a stream is required). */
const STREAM_BUFFER = 256 * 1024;

/**
 * A body read through `readBody` as a Readable, for a caller that needs a stream (a probe's
 * first range): the bytes go into buffers allocated here, handed on as they fill, and
 * reading pauses while the stream's consumer does. `destroy` drops the body unread.
 */
export function bodyStream(readBody: (sink: BodySink) => Promise<void>, destroy: () => void): Readable {
  let buffer = Buffer.allocUnsafe(STREAM_BUFFER);
  let used = 0;
  let flowing = true;
  let waiting: { resolve: () => void; reject: (err: Error) => void } | undefined;
  const gone = (): Error => new NetworkError('the body stream was destroyed');
  const stream = new Readable({
    read() {
      flowing = true;
      waiting?.resolve();
      waiting = undefined;
    },
    destroy(err, callback) {
      destroy();
      // A read waiting for room stops here (the sink never has room again).
      waiting?.reject(gone());
      waiting = undefined;
      callback(err);
    },
  });
  const sink: BodySink = {
    region() {
      if (!flowing || stream.destroyed) return undefined;
      if (used === buffer.length) {
        buffer = Buffer.allocUnsafe(STREAM_BUFFER);
        used = 0;
      }
      return buffer.subarray(used);
    },
    commit(length) {
      // The bytes before `used` are never written again: the pushed slice keeps them.
      flowing = stream.push(buffer.subarray(used, used + length));
      used += length;
      return !stream.destroyed;
    },
    ready: () =>
      new Promise<void>((resolve, reject) => {
        if (stream.destroyed) reject(gone());
        else if (flowing) resolve();
        else waiting = { resolve, reject };
      }),
  };
  readBody(sink).then(
    () => {
      if (!stream.destroyed) stream.push(null);
    },
    (err: unknown) => stream.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return stream;
}
