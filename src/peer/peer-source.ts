// A peer's agent as a Source of one blob: ranges of `GET /v1/blobs/:digest` on another node.
// The agent is not trusted: every answer is checked against the range asked for and the
// blob's size, and the engine verifies each piece against the trusted manifest before it
// counts. Peers are reached directly (no proxy): they are inside the fleet's network.
import http, { type IncomingMessage } from 'node:http';
import { BadResponseError, cancelled, HttpStatusError, type LoomError, StallError } from '../core/errors.js';
import type { ProbeExpectation, ProbeResult, Source, StreamBody } from '../sources/source.js';
import { DEFAULTS } from '../core/defaults.js';

export interface PeerSourceOptions {
  /** The peer's node id, for stats and reports. */
  nodeId: string;
  /** Base URL of the peer's agent, e.g. http://10.0.0.7:7071. */
  baseUrl: string;
  /** The blob (hex sha256). */
  digest: string;
  /** The blob's size, from the trusted manifest; undefined: learnt from the first answer. */
  size: number | undefined;
  /** Bearer token the agent asks for, if any. */
  token?: string;
  /** Abort a request that sends nothing for this long. */
  stallTimeoutMs: number;
  /** Connections to this peer at most. */
  maxSockets: number;
  /**
   * A response slower than this on average (after `paceGraceMs`) passes the peer over for
   * the rest of the download. Default 512 KiB/s: far below any peer on the fleet's network.
   */
  minBytesPerSecond?: number;
  /** Time a response has before its pace is judged. Default 3 s. */
  paceGraceMs?: number;
  /**
   * The digest the blob is published under, once known, when `digest` is only its name
   * while nobody knew the digest (a source id): a peer that finishes adopts the blob under
   * its digest and answers 404 under the old name. Undefined: there is no other name.
   */
  publishedName?: () => Promise<string | undefined>;
}

const PACE_CHECK_MS = 500;

export class PeerSource implements Source {
  url: string;
  readonly label: string;
  private readonly agent: http.Agent;
  private target: URL;
  /** The peer said it holds the whole blob (`X-Loom-Complete: 1`): every piece may go to it. */
  complete = false;
  /**
   * Why this peer is passed over for the rest of the download (it stalled or trickled).
   * A stalling peer that sends a little before each stall would otherwise be retried
   * forever (every byte resets the retry budget), and the origin may not take over a piece
   * a live peer announces: the download would hang on it. So every later request fails at
   * once with an error that is not retried, and the engine drops the peer.
   */
  private struck: LoomError | undefined;

  constructor(private readonly options: PeerSourceOptions) {
    this.target = new URL(`/v1/blobs/${options.digest}`, options.baseUrl);
    if (this.target.protocol !== 'http:') {
      throw new BadResponseError(`peer ${options.nodeId} advertises ${options.baseUrl}: only http:// agents are used`);
    }
    this.url = this.target.href;
    this.label = `peer ${options.nodeId}`;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets, scheduling: 'lifo' });
  }

  /**
   * Opens the first range; a blob whose size no manifest gave yet (a follower taking the
   * leader's pieces) learns it from the Content-Range total, as from an origin.
   */
  async probe(firstRange: readonly [number, number], signal: AbortSignal): Promise<ProbeResult> {
    const [start, end] = firstRange;
    const known = this.options.size;
    const last = known === undefined ? end : Math.min(end, known);
    const body = await this.open(start, last, known, signal);
    return { size: body.total, acceptsRanges: true, validator: {}, body, finalUrl: this.url };
  }

  async openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<StreamBody> {
    return this.open(start, end, expect.size, signal);
  }

  /** Asks for the blob under `digest` from now on (it was published under it). */
  rename(digest: string): void {
    const target = new URL(`/v1/blobs/${digest}`, this.options.baseUrl);
    if (target.href === this.target.href) return;
    this.target = target;
    this.url = target.href;
  }

  private async open(
    start: number,
    end: number,
    size: number | undefined,
    signal: AbortSignal,
  ): Promise<StreamBody & { total: number }> {
    if (this.struck) throw this.struck;
    const asked = this.target.href;
    let res = await this.request(start, end, signal);
    if (res.statusCode === 404 && this.options.publishedName) {
      // A peer that finished serves the blob under its digest only: ask again under it.
      const digest = await this.options.publishedName().catch(() => undefined);
      if (digest) this.rename(digest);
      if (this.target.href !== asked) {
        res.resume();
        res = await this.request(start, end, signal);
      }
    }
    const status = res.statusCode ?? 0;
    if (status !== 206) {
      res.resume();
      const retryAfter = Number(res.headers['retry-after']);
      throw new HttpStatusError(`${this.label} answered HTTP ${status} for bytes ${start}-${end - 1}`, {
        url: this.url,
        status,
        // 503: the peer is busy (max uploads), worth another try. 404: it no longer holds these
        // bytes under this name (evicted, or a leader that finished: its blob is complete
        // under its digest now): the piece goes to another source at once. Anything else
        // (401 token, 400) will not heal by asking this peer again.
        retryable: status === 503 || status === 429,
        retryAfterMs: Number.isFinite(retryAfter) ? retryAfter * 1000 : undefined,
      });
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
    const length = res.headers['content-length'];
    if (
      !range ||
      Number(range[1]) !== start ||
      // Shorter than asked is legal (the engine asks for the rest); longer or empty is not.
      Number(range[2]) + 1 > end ||
      Number(range[2]) + 1 <= start ||
      (size !== undefined && Number(range[3]) !== size) ||
      (length !== undefined && Number(length) !== Number(range[2]) + 1 - start)
    ) {
      res.destroy();
      throw new BadResponseError(
        `${this.label} answered bytes=${start}-${end - 1} of a ${size ?? '?'}-byte blob with Content-Range "${res.headers['content-range'] ?? '(none)'}"`,
        { url: this.url },
      );
    }
    if (res.headers['x-loom-complete'] === '1') this.complete = true;
    return { start, end: Number(range[2]) + 1, stream: res, total: Number(range[3]) };
  }

  private request(start: number, end: number, signal: AbortSignal): Promise<IncomingMessage> {
    if (signal.aborted) return Promise.reject(cancelled());
    return new Promise((resolve, reject) => {
      const req = http.request(this.target, {
        agent: this.agent,
        headers: {
          range: `bytes=${start}-${end - 1}`,
          'user-agent': 'loom-peer/0.1',
          ...(this.options.token && { authorization: `Bearer ${this.options.token}` }),
        },
      });
      const onAbort = (): void => {
        req.destroy(cancelled());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      let response: IncomingMessage | undefined;
      req.setTimeout(this.options.stallTimeoutMs, () => {
        const stalled = new StallError(`no data from ${this.label} for ${this.options.stallTimeoutMs} ms`, {
          url: this.url,
        });
        if (response) {
          // Mid-body: the peer is passed over (see `struck`).
          response.destroy(this.strike(`${stalled.message} mid-response`));
        } else req.destroy(stalled);
      });
      req.once('response', (res) => {
        response = res;
        const pace = this.watchPace(res);
        res.once('close', () => {
          clearInterval(pace);
          signal.removeEventListener('abort', onAbort);
        });
        resolve(res);
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        signal.removeEventListener('abort', onAbort);
        // Nothing listens where the peer's agent was: it is gone (its node died or stopped).
        // Retrying with backoff would keep this download on a dead peer for tens of seconds;
        // it is passed over at once and its pieces go to the others (or, once its lease
        // lapses, to the origin).
        reject(err.code === 'ECONNREFUSED' ? this.strike(`its agent refused the connection (${err.message})`) : err);
      });
      req.end();
    });
  }

  /** Passes the peer over for the rest of the download; returns the error that says why. */
  private strike(why: string): LoomError {
    this.struck ??= new HttpStatusError(`${this.label} passed over for this download: ${why}`, {
      url: this.url,
      status: 504,
      retryable: false,
    });
    return this.struck;
  }

  /** Destroys a response that arrives far slower than a peer on the fleet's network would send it. */
  private watchPace(res: IncomingMessage): NodeJS.Timeout {
    const socket = res.socket;
    const from = socket.bytesRead;
    const startedAt = performance.now();
    const floor = this.options.minBytesPerSecond ?? DEFAULTS.peers.minBytesPerSecond;
    const grace = this.options.paceGraceMs ?? DEFAULTS.peers.paceGraceMs;
    const timer = setInterval(() => {
      const elapsed = performance.now() - startedAt;
      if (elapsed < grace || res.destroyed || res.readableEnded) return;
      const rate = ((socket.bytesRead - from) * 1000) / elapsed;
      if (rate < floor) {
        res.destroy(this.strike(`${Math.round(rate / 1024)} KiB/s, below ${Math.round(floor / 1024)} KiB/s`));
      }
    }, PACE_CHECK_MS);
    timer.unref();
    return timer;
  }

  close(): void {
    this.agent.destroy();
  }
}
