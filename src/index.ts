// Loom's public API: what the CLI uses and what TypeScript programs import.
export { fetchFile, type FetchResult } from './fetch/fetch-file.js';
export type { FetchOptions } from './fetch/options.js';
export {
  downloadBlob,
  downloadToPart,
  startBlobDownload,
  type FetchProgress,
  type BlobDownloadParams,
  type BlobDownloadResult,
  type BlobDownloadHandle,
  type DownloadOptions,
  type DownloadResult,
  type SourceSlot,
  type DroppedSource,
} from './fetch/download.js';
export { resolveFetchOptions, type ResolvedFetchOptions } from './fetch/options.js';
export { RequestPool, PoolMember, type RequestSlot, type RequestSlots } from './fetch/request-pool.js';
export {
  runFileQueue,
  type QueuedFile,
  type QueueProgress,
  type ActiveFile,
  type FileQueueOptions,
} from './fetch/file-queue.js';
export {
  pieceSizeFor,
  pieceCount,
  pieceRange,
  isValidManifest,
  manifestFingerprint,
  type Manifest,
} from './core/manifest.js';
export { sourceFor, type SourceOptions } from './sources/index.js';
export type { Source, RangeBody, ProbeResult, ProbeExpectation, Validator } from './sources/source.js';
export type { DownloadStats } from './fetch/stats.js';
export * from './core/errors.js';
export { DEFAULTS } from './core/defaults.js';
export { parseSize, parseDuration, formatBytes } from './core/units.js';
export { fetchCached, type CachedFetchResult, type CacheOptions, type CacheOutcome } from './cache/cached-fetch.js';
export { sourceKey } from './cache/source-key.js';
export { resolveCacheRoot } from './cache/cache-root.js';
export { openCache, listCache, verifyCache, gcCache, removeFromCache } from './cache/cache-admin.js';
export { buildControlPlane, CONTROL_PLANE_DEFAULTS, type ControlPlaneOptions } from './control-plane/server.js';
export { openStore } from './control-plane/open-store.js';
export { ControlPlaneClient } from './control-plane/client.js';
export type { RegistryStore, NodeRecord, Replica } from './control-plane/model.js';
export type { StoredManifest, Lease, LeaseGrant } from './control-plane/model.js';
export { nodeToken, NODE_HEADER } from './control-plane/auth.js';
export { VERIFIED_AGAINST, type VerifiedAgainst } from './control-plane/schemas.js';
export { PeerPlanner, defaultNodeId, type PeerFetchOptions } from './peer/peer-download.js';
export type { DownloadPlanner, PlannedDownload } from './cache/download-planner.js';
export { Agent, type AgentOptions } from './peer/agent.js';
