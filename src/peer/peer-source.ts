// A peer's agent as a Source of one blob: ranges of `GET /v1/blobs/:digest` on another node.
// The agent is not trusted: every answer is checked against the range asked for and the
// blob's size, and the engine checks each piece before it counts, against the trusted
// manifest, or (a follower, before any manifest exists) against the digest the lease holder
// published for it. Peers are reached directly (no proxy): they are inside the fleet's network.
//
// Ranges go through the raw client (src/sources/raw-http.ts): the body is read straight
// into the engine's write slabs, with no allocation or stream per chunk. Agents answer
// plain HTTP with a Content-Length, which is all that client needs; a peer that sends
// anything else breaks the agent's contract and is treated as a liar (BadResponseError).
// Measured on a fleet cold start: node:http cost a follower ~1.2 s of user CPU per GiB.
import {
  BadResponseError,
  ConnectionRefusedError,
  HttpStatusError,
  type LoomError,
  StallError,
} from '../core/errors.js';
import { bodyStream, RawHttpClient, type RawResponse } from '../sources/raw-http.js';
import type { BodySink, DirectBody, ProbeExpectation, ProbeResult, Source } from '../sources/source.js';
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
/** An error body read away (keeping the connection) when at most this long; else it is cut. */
const SMALL_BODY = 64 * 1024;

/** A checked range answer: the bytes [start, end) of a `total`-byte blob. */
interface Opened {
  start: number;
  end: number;
  total: number;
  res: RawResponse;
}

export class PeerSource implements Source {
  url: string;
  readonly label: string;
  private readonly raw: RawHttpClient;
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
    this.raw = new RawHttpClient({ maxConnections: options.maxSockets });
  }

  /**
   * Opens the first range; a blob whose size no manifest gave yet (a follower taking the
   * leader's pieces) learns it from the Content-Range total, as from an origin. The engine
   * reads a probe's body as a stream.
   */
  async probe(firstRange: readonly [number, number], signal: AbortSignal): Promise<ProbeResult> {
    const [start, end] = firstRange;
    const known = this.options.size;
    const last = known === undefined ? end : Math.min(end, known);
    const opened = await this.open(start, last, known, signal);
    const direct = this.body(opened);
    const stream = bodyStream(
      (sink) => direct.readInto(sink),
      () => direct.destroy(),
    );
    return {
      size: opened.total,
      acceptsRanges: true,
      validator: {},
      body: { start, end: opened.end, stream },
      finalUrl: this.url,
    };
  }

  async openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<DirectBody> {
    return this.body(await this.open(start, end, expect.size, signal));
  }

  /** The name the blob is asked for by now: the digest given, or the one it was renamed to. */
  get blob(): string {
    return this.target.pathname.slice('/v1/blobs/'.length);
  }

  /** Asks for the blob under `digest` from now on (it was published under it). */
  rename(digest: string): void {
    const target = new URL(`/v1/blobs/${digest}`, this.options.baseUrl);
    if (target.href === this.target.href) return;
    this.target = target;
    this.url = target.href;
  }

  private async open(start: number, end: number, size: number | undefined, signal: AbortSignal): Promise<Opened> {
    if (this.struck) throw this.struck;
    const asked = this.target.href;
    let res = await this.request(start, end, signal);
    if (res.status === 404 && this.options.publishedName) {
      // A peer that finished serves the blob under its digest only: ask again under it.
      const digest = await this.options.publishedName().catch(() => undefined);
      if (digest) this.rename(digest);
      if (this.target.href !== asked) {
        await drain(res);
        res = await this.request(start, end, signal);
      }
    }
    const { status } = res;
    if (status !== 206) {
      const retryAfter = Number(res.headers['retry-after']);
      await drain(res);
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
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '');
    const length = res.contentLength;
    if (
      !range ||
      Number(range[1]) !== start ||
      // Shorter than asked is legal (the engine asks for the rest); longer or empty is not.
      Number(range[2]) + 1 > end ||
      Number(range[2]) + 1 <= start ||
      (size !== undefined && Number(range[3]) !== size) ||
      // An agent always sends the body's length, and it must be the range's.
      length !== Number(range[2]) + 1 - start
    ) {
      res.destroy();
      throw new BadResponseError(
        `${this.label} answered bytes=${start}-${end - 1} of a ${size ?? '?'}-byte blob with Content-Range "${res.headers['content-range'] ?? '(none)'}" and Content-Length ${length ?? '(none)'}`,
        { url: this.url },
      );
    }
    if (res.headers['x-loom-complete'] === '1') this.complete = true;
    return { start, end: Number(range[2]) + 1, total: Number(range[3]), res };
  }

  private async request(start: number, end: number, signal: AbortSignal): Promise<RawResponse> {
    try {
      return await this.raw.get({
        url: this.target,
        headers: {
          Range: `bytes=${start}-${end - 1}`,
          'User-Agent': 'loom-peer/0.1',
          ...(this.options.token && { Authorization: `Bearer ${this.options.token}` }),
        },
        signal,
        stallTimeoutMs: this.options.stallTimeoutMs,
        // An agent sends its head at once: one that trickles it is given up like a silent one.
        headTimeoutMs: this.options.stallTimeoutMs,
      });
    } catch (err) {
      // Nothing listens where the peer's agent was: it is gone (its node died or stopped).
      // Retrying with backoff would keep this download on a dead peer for tens of seconds;
      // it is passed over at once and its pieces go to the others (or, once its lease
      // lapses, to the origin).
      if (err instanceof ConnectionRefusedError) throw this.strike(`its agent refused the connection (${err.message})`);
      if (err instanceof StallError)
        throw new StallError(`no answer from ${this.label}: ${err.message}`, { url: this.url });
      throw err;
    }
  }

  /**
   * The body of a checked answer, read straight into the engine's regions. A peer that goes
   * quiet mid-body, or sends far slower than a peer on the fleet's network would, is passed
   * over for the rest of the download (see `struck`).
   */
  private body(opened: Opened): DirectBody {
    const { res } = opened;
    return {
      start: opened.start,
      end: opened.end,
      readInto: async (sink) => {
        let received = 0;
        let slow: LoomError | undefined;
        const counted: BodySink = {
          region: () => sink.region(),
          commit: (length) => {
            received += length;
            return sink.commit(length);
          },
          ready: () => sink.ready(),
        };
        const startedAt = performance.now();
        const floor = this.options.minBytesPerSecond ?? DEFAULTS.peers.minBytesPerSecond;
        const grace = this.options.paceGraceMs ?? DEFAULTS.peers.paceGraceMs;
        const pace = setInterval(() => {
          const elapsed = performance.now() - startedAt;
          if (elapsed < grace) return;
          const rate = (received * 1000) / elapsed;
          if (rate < floor) {
            slow = this.strike(`${Math.round(rate / 1024)} KiB/s, below ${Math.round(floor / 1024)} KiB/s`);
            res.destroy();
          }
        }, PACE_CHECK_MS);
        pace.unref();
        try {
          await res.readBody(counted);
        } catch (err) {
          if (slow) throw slow;
          if (err instanceof StallError) throw this.strike(`${err.message} mid-response`);
          throw err;
        } finally {
          clearInterval(pace);
        }
      },
      destroy: () => res.destroy(),
    };
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

  close(): void {
    this.raw.close();
  }
}

/** Reads a small error body away so its connection is kept; a large or unlength'd one is cut. */
async function drain(res: RawResponse): Promise<void> {
  if (res.contentLength === undefined || res.contentLength > SMALL_BODY) {
    res.destroy();
    return;
  }
  const scratch = Buffer.allocUnsafe(res.contentLength);
  let used = 0;
  await res
    .readBody({
      region: () => (used < scratch.length ? scratch.subarray(used) : undefined),
      commit: (length) => {
        used += length;
        return true;
      },
      ready: async () => undefined,
    })
    .catch(() => undefined);
}
