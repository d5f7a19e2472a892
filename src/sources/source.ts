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
export interface RangeBody {
  start: number;
  end: number | undefined;
  stream: Readable;
}

export interface ProbeResult {
  /** Total size in bytes; undefined when the server streams without a length. */
  size: number | undefined;
  /** False when the server answered a ranged request with the whole file (200). */
  acceptsRanges: boolean;
  validator: Validator;
  /** The probe's own response, already open: its bytes are used, not re-fetched. */
  body: RangeBody;
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
