// The counters a download reports (in --json and to library callers). Kept apart from the
// engine so that a cache hit can report zeros without loading the engine.

export interface DownloadStats {
  /** Bytes received over the network in this run (retried bytes count twice). */
  transferredBytes: number;
  /** Bytes found on disk from an earlier, interrupted run. */
  resumedBytes: number;
  requests: number;
  retries: number;
  /** Times the download started over because the file changed under it. */
  restarts: number;
  /** Ranges split to keep idle workers busy at the tail. */
  splits: number;
  /**
   * Seconds from the last byte on disk to the blob's digest (or its last piece) being
   * checked; undefined when nothing was hashed or nothing was received.
   */
  lastByteToDigestSeconds: number | undefined;
  /**
   * Bytes between the end of the finished prefix and the end of the file just before the
   * last byte arrived: the prefix hash can reach them only after it. Undefined as above.
   */
  prefixBehindAtLastByte: number | undefined;
  /**
   * Bytes run through sha256 (each hash counts: the whole-file digest and the piece digests
   * of one pass are twice the file). A follower that finds every piece in the trusted
   * manifest hashes its pieces only: once the file.
   */
  hashedBytes: number;
}

export function emptyStats(): DownloadStats {
  return {
    transferredBytes: 0,
    resumedBytes: 0,
    requests: 0,
    retries: 0,
    restarts: 0,
    splits: 0,
    lastByteToDigestSeconds: undefined,
    prefixBehindAtLastByte: undefined,
    hashedBytes: 0,
  };
}
