// Loom's public API: what the CLI uses and what TypeScript programs import.
export { fetchFile, type FetchResult } from './fetch/fetch-file.js';
export type { FetchOptions } from './fetch/options.js';
export type { FetchProgress, DownloadStats } from './fetch/download.js';
export * from './core/errors.js';
export { DEFAULTS } from './core/defaults.js';
export { parseSize, parseDuration, formatBytes } from './core/units.js';
