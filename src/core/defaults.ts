// The one table of defaults. Every option elsewhere documents itself against these names;
// the README's "Defaults" section lists the same values.

export const DEFAULTS = {
  /** Chunk: the unit of planning, splitting and journaling. 10 MiB like hf_transfer. */
  chunkSize: 10 * 1024 * 1024,
  /** Requests in flight per file. 16 is where loopback and object stores stop gaining. */
  workers: 16,
  minWorkers: 1,
  maxWorkers: 256,
  /** Redirects followed before giving up (browsers and curl use 20; 10 is plenty for CDNs). */
  maxRedirects: 10,
  /** A request that sends no byte for this long is aborted and retried (AWS CRT uses 30 s). */
  stallTimeoutMs: 30_000,
  retry: {
    /** Attempts per chunk, the first included. */
    attempts: 6,
    baseDelayMs: 1_000,
    factor: 2,
    maxDelayMs: 30_000,
    /** A Retry-After longer than this fails now instead of idling a GPU node. */
    maxRetryAfterMs: 120_000,
  },
  /** Idle workers split an in-flight range only if each half is at least this big. */
  minSplitSize: 1024 * 1024,
  /** How often the resume journal is written while bytes arrive. */
  journalIntervalMs: 500,
  /** Size of the reads that hash the finished prefix of the file. */
  hashReadSize: 1024 * 1024,
  /** Piece: the unit of verification and of a manifest; doubled until a blob has <= maxPieces. */
  pieceSize: 16 * 1024 * 1024,
  maxPieces: 1024,
} as const;
