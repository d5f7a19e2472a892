// The contract between the fetch engine and the places bytes come from (an HTTP origin,
// later the Hub, S3 and peers). The engine plans ranges; a Source opens them and vouches
// that a response really is the range asked for, of the version first probed.
import type { Readable } from 'node:stream';

/** What identifies one version of a remote file. */
export interface Validator {
  /** Strong or weak ETag as the server sent it (quotes kept). */
  etag?: string;
  lastModified?: string;
}

/** Bytes of the file on the wire: [start, end) of the body, `end` undefined when unknown. */
export type RangeBody = StreamBody | DirectBody;

/** A body read as a stream of buffers the source allocates (node:http, S3, peers). */
export interface StreamBody {
  start: number;
  end: number | undefined;
  stream: Readable;
}

/**
 * A body the source reads straight into the engine's buffers (the lean data path, plain
 * HTTP): no buffer is allocated per read and no stream runs per chunk.
 */
export interface DirectBody {
  start: number;
  end: number;
  /** Reads the body into `sink`; resolves when all of it is there or the sink wants no more. */
  readInto(sink: BodySink): Promise<void>;
  /** Drops the body unread, and its connection. */
  destroy(): void;
}

/** Where a direct body goes: regions of the engine's memory, filled in order. */
export interface BodySink {
  /** A region to read the next bytes into; undefined when none is free right now. */
  region(): Buffer | undefined;
  /**
   * `length` bytes were written at the start of the last region handed out. Returns false
   * to stop taking this body (the rest is not wanted; the connection is then closed).
   */
  commit(length: number): boolean;
  /** Resolves when region() can answer again; rejects when the sink has failed. */
  ready(): Promise<void>;
}

/** Drops a body unread, whichever kind it is. */
export function discardBody(body: RangeBody): void {
  if ('stream' in body) body.stream.destroy();
  else body.destroy();
}

export interface ProbeResult {
  /** Total size in bytes; undefined when the server streams without a length. */
  size: number | undefined;
  /** False when the server answered a ranged request with the whole file (200). */
  acceptsRanges: boolean;
  validator: Validator;
  /** The probe's own response, already open: its bytes are used, not re-fetched. */
  body: StreamBody;
  /** The URL the bytes came from after redirects (for logs and --json). */
  finalUrl: string;
}

export interface Source {
  /** The URL or URI as the user gave it. */
  readonly url: string;
  /** Short label for progress lines and logs. */
  readonly label: string;
  /**
   * Learns size, validator and range support with one request that also starts the
   * transfer: a GET of `firstRange` (a ranged GET costs the same round trip as a HEAD).
   */
  probe(firstRange: readonly [number, number], signal: AbortSignal): Promise<ProbeResult>;
  /**
   * Opens [start, end) of the version described by `validator`. Rejects with
   * SourceChangedError when the file changed, BadResponseError when the server breaks
   * the range contract, HttpStatusError for an error status.
   */
  openRange(start: number, end: number, expect: ProbeExpectation, signal: AbortSignal): Promise<RangeBody>;
  /**
   * Asks whether the version described by `validator` is still current, with one
   * conditional request. Rejects when the origin cannot be asked.
   */
  revalidate?(validator: Validator, signal: AbortSignal, timeoutMs: number): Promise<'fresh' | 'changed'>;
  /** Releases sockets. */
  close(): void;
}

/** What a range response must agree with. */
export interface ProbeExpectation {
  size: number;
  validator: Validator;
}
