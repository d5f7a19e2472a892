// The Hub's HTTP API as Loom uses it: a revision resolved to its commit, the paginated
// recursive tree listing, and a file's metadata from a HEAD of its resolve URL. Every error
// answer becomes the typed error its X-Error-Code (or status) names; 429 and 5xx are retried
// with the wait the Hub asks for (Retry-After), within bounds. What the Hub says that later
// names something on disk (oids, commits, ETags) is checked here, and its pages are followed
// on its own origin only, never in a circle.
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BadResponseError,
  HttpStatusError,
  HubEntryNotFoundError,
  HubGatedRepoError,
  HubRateLimitedError,
  HubRepoNotFoundError,
  HubRevisionNotFoundError,
  HubUnauthorizedError,
  InvalidUrlError,
  LoomError,
  NetworkError,
  StallError,
  RedirectError,
  cancelled,
} from '../../core/errors.js';
import { DEFAULTS } from '../../core/defaults.js';
import { formatWait } from '../../core/units.js';
import { HttpClient } from '../http-client.js';
import { PageGuard } from '../page-guard.js';
import { formatHfRef, resolveUrl, type HfRef, type HfRepoType } from './uri.js';

export interface HubApiOptions {
  endpoint: string;
  token: string | undefined;
  caCertFiles?: readonly string[];
  /** Attempts for a request answered 429 or 5xx or cut off, the first included. Default 4. */
  attempts?: number;
  /** A longer Retry-After fails at once. Default 60 s. */
  maxRetryAfterMs?: number;
  /** Wait when a 429 or 5xx names none. Default 0.5 s, doubling. */
  baseDelayMs?: number;
  stallTimeoutMs?: number;
  signal?: AbortSignal;
  /** Told before each wait for a retry (a 429, a 5xx, a cut connection): the wait is not silent. */
  onRetry?: (message: string) => void;
  /** Pages of a tree listing followed at most. Default DEFAULTS.maxListPages. */
  maxPages?: number;
}

/** One entry of the tree API. */
export interface TreeEntry {
  type: 'file' | 'directory';
  path: string;
  size: number;
  /** The git blob sha1 (for an LFS file: of its pointer file). */
  oid: string;
  lfs?: { oid: string; size: number };
}

/** What a HEAD of a file's resolve URL tells, before any byte moves. */
export interface HubFileMeta {
  /** The commit the revision resolved to (X-Repo-Commit). */
  commit: string;
  /** X-Linked-Etag, else ETag, quotes and W/ stripped: sha256 (LFS) or git sha1. */
  etag: string;
  size: number;
  /** True when the etag is the file's sha256 (an LFS file). */
  lfs: boolean;
}

const apiType = (type: HfRepoType): string => `${type}s`;

/** An ETag or X-Linked-Etag as the cache names blobs: no W/, no quotes. */
export function normalizeEtag(value: string): string {
  return value.replace(/^W\//, '').replace(/^"|"$/g, '');
}

/** Parses `Link: <url>; rel="next"` (relative URLs resolve against `base`). */
export function nextLink(link: string | undefined, base: string): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const match = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (match && /rel="?next"?/.test(match[2]!)) return new URL(match[1]!, base).href;
  }
  return undefined;
}

async function readText(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function header(res: IncomingMessage, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

const GIT_SHA1 = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** A value from the Hub as an error message shows it: quoted, and cut short. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

const isSize = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

/**
 * Checks a file entry of the tree listing. Its oid (git sha1) and lfs.oid (sha256) become
 * blob names in the HF cache (`blobs/<etag>`, `.locks/…/<etag>.lock`) and the target of the
 * snapshot's symlink: a Hub (or a mirror, or a tampered answer) giving `../../secret.txt`
 * there would link a file from anywhere into the snapshot, or create files outside the cache.
 * So every oid must be lower-case hex of its exact length, as the Hub gives them, before any
 * of it reaches the disk.
 */
function checkTreeFile(item: TreeEntry, ref: HfRef, url: string): void {
  const bad = (what: string): BadResponseError =>
    new BadResponseError(
      `the Hub's tree listing of ${ref.repoId} gives ${shown(item.path)} ${what}: refusing the listing`,
      {
        url,
        hint: 'nothing was written; check HF_ENDPOINT: it must be a Hugging Face Hub (or a faithful mirror)',
      },
    );
  if (typeof item.oid !== 'string' || !GIT_SHA1.test(item.oid)) {
    throw bad(`the oid ${shown(item.oid)}, not a git sha1 (40 lower-case hex digits)`);
  }
  if (!isSize(item.size)) throw bad(`the size ${shown(item.size)}`);
  if (item.lfs === undefined || item.lfs === null) return;
  if (typeof item.lfs !== 'object' || typeof item.lfs.oid !== 'string' || !SHA256.test(item.lfs.oid)) {
    throw bad(`the lfs.oid ${shown(item.lfs?.oid)}, not a sha256 (64 lower-case hex digits)`);
  }
  if (!isSize(item.lfs.size)) throw bad(`the lfs.size ${shown(item.lfs.size)}`);
}

/** The typed error for a Hub error answer. */
export function hubError(
  res: IncomingMessage,
  what: { ref: HfRef; url: string; hadToken: boolean; body?: string },
): LoomError {
  const status = res.statusCode ?? 0;
  const code = header(res, 'x-error-code');
  const hubSays = header(res, 'x-error-message');
  const name = formatHfRef(what.ref);
  const details = { url: what.url, status };
  switch (code) {
    case 'RepoNotFound':
      return new HubRepoNotFoundError(`repository ${what.ref.repoType} ${what.ref.repoId} not found on the Hub`, {
        ...details,
        hint: what.hadToken
          ? 'check the name and --repo-type, and that your token can see it'
          : 'check the name and --repo-type; if it is private, give a token (--token, HF_TOKEN or `hf auth login`)',
      });
    case 'GatedRepo':
      return new HubGatedRepoError(
        `${what.ref.repoId} is a gated repo and ${what.hadToken ? 'this token has no access to it' : 'no token was given'}`,
        {
          ...details,
          hint: what.hadToken
            ? `ask for access on the repo's page, then retry`
            : `ask for access on the repo's page, then give a token (--token, HF_TOKEN or \`hf auth login\`)`,
        },
      );
    case 'RevisionNotFound':
      return new HubRevisionNotFoundError(`revision "${what.ref.revision ?? 'main'}" not found in ${what.ref.repoId}`, {
        ...details,
        hint: 'check the branch, tag or commit after @',
      });
    case 'EntryNotFound':
      return new HubEntryNotFoundError(`${what.ref.path ?? 'file'} not found in ${name}`, {
        ...details,
        hint: 'check the path inside the repo',
      });
    default:
      break;
  }
  if (status === 401) {
    return new HubUnauthorizedError(
      what.hadToken
        ? `the Hub refused the token (HTTP 401) for ${name}`
        : `the Hub wants a token (HTTP 401) for ${name}`,
      {
        ...details,
        hint: what.hadToken
          ? 'check --token / HF_TOKEN / the token file; it may be revoked or mistyped'
          : 'give a token with --token, HF_TOKEN or `hf auth login`',
      },
    );
  }
  if (status === 429) {
    return new HubRateLimitedError(`the Hub is rate limiting requests (HTTP 429) for ${name}`, {
      ...details,
      hint: 'wait and retry; a token (HF_TOKEN) gets a higher limit',
    });
  }
  const message = hubSays ?? what.body?.slice(0, 200);
  return new HttpStatusError(`HTTP ${status} from the Hub for ${name}${message ? `: ${message}` : ''}`, details);
}

export class HubApi {
  readonly endpoint: string;
  private readonly client: HttpClient;
  private readonly attempts: number;
  private readonly maxRetryAfterMs: number;
  private readonly baseDelayMs: number;
  private readonly stallTimeoutMs: number;

  constructor(private readonly options: HubApiOptions) {
    this.endpoint = options.endpoint.replace(/\/+$/, '');
    if (!/^https?:\/\/[^/]/.test(this.endpoint)) {
      throw new InvalidUrlError(`the Hub endpoint "${options.endpoint}" is not an http(s) URL`, {
        hint: 'set HF_ENDPOINT to a URL such as https://huggingface.co',
      });
    }
    this.stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
    this.client = new HttpClient({
      maxSockets: 8,
      caCertFiles: options.caCertFiles,
      connectTimeoutMs: this.stallTimeoutMs,
    });
    this.attempts = options.attempts ?? 4;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.baseDelayMs = options.baseDelayMs ?? 500;
  }

  get hasToken(): boolean {
    return this.options.token !== undefined;
  }

  /** Headers for the Hub's own host (never for the CDN). */
  authHeaders(): Record<string, string> {
    return this.options.token ? { authorization: `Bearer ${this.options.token}` } : {};
  }

  /** One request, retried on 429/5xx/connection failures; non-2xx/3xx answers become typed errors. */
  private async send(method: 'GET' | 'HEAD', url: string, ref: HfRef, accept?: string): Promise<IncomingMessage> {
    const headers: OutgoingHttpHeaders = {
      'user-agent': 'loom/0.1',
      'accept-encoding': 'identity',
      ...(accept && { accept }),
      ...this.authHeaders(),
    };
    for (let attempt = 1; ; attempt++) {
      let res: IncomingMessage;
      try {
        res = await this.client.request(new URL(url), {
          method,
          headers,
          signal: this.options.signal,
          stallTimeoutMs: this.stallTimeoutMs,
        });
      } catch (err) {
        if (this.options.signal?.aborted) throw cancelled();
        if (!isTransient(err)) throw err;
        if (attempt >= this.attempts) {
          throw new NetworkError(`cannot reach the Hub at ${new URL(url).host}: ${(err as Error).message}`, {
            url,
            cause: err,
            hint: 'check the network and HF_ENDPOINT (or set HF_HUB_OFFLINE=1 to use the local cache)',
          });
        }
        await this.waitToRetry(this.backoff(attempt), (err as Error).message, ref, attempt);
        continue;
      }
      const status = res.statusCode ?? 0;
      if (status < 400) return res;
      const retryable = status === 429 || status >= 500;
      const body = method === 'GET' ? await readText(res).catch(() => '') : (res.resume(), '');
      const error = hubError(res, { ref, url, hadToken: this.hasToken, body });
      if (!retryable || attempt >= this.attempts) throw error;
      const retryAfter = parseRetryAfterMs(header(res, 'retry-after'));
      if (retryAfter !== undefined && retryAfter > this.maxRetryAfterMs) {
        throw new HubRateLimitedError(
          `the Hub asks to wait ${Math.ceil(retryAfter / 1000)} s (Retry-After) for ${formatHfRef(ref)}`,
          { url, status, hint: 'retry later; a token (HF_TOKEN) gets a higher limit' },
        );
      }
      await this.waitToRetry(retryAfter ?? this.backoff(attempt), `HTTP ${status}`, ref, attempt);
    }
  }

  private async waitToRetry(ms: number, reason: string, ref: HfRef, attempt: number): Promise<void> {
    this.options.onRetry?.(
      `the Hub answered ${reason} for ${formatHfRef(ref)}; retrying in ${formatWait(ms)} (attempt ${attempt + 1} of ${this.attempts})`,
    );
    await this.wait(ms);
  }

  private backoff(attempt: number): number {
    return Math.min(this.baseDelayMs * 2 ** (attempt - 1), 30_000);
  }

  private async wait(ms: number): Promise<void> {
    try {
      await sleep(ms, undefined, { signal: this.options.signal });
    } catch {
      throw cancelled();
    }
  }

  private async getJson<T>(url: string, ref: HfRef): Promise<{ value: T; res: IncomingMessage }> {
    const res = await this.send('GET', url, ref, 'application/json');
    const text = await readText(res);
    try {
      return { value: JSON.parse(text) as T, res };
    } catch {
      throw new HttpStatusError(`the Hub answered ${url} with something that is not JSON`, {
        url,
        status: res.statusCode,
      });
    }
  }

  /** The commit a branch, tag or commit names. */
  async resolveRevision(ref: HfRef, revision: string): Promise<string> {
    const url = `${this.endpoint}/api/${apiType(ref.repoType)}/${ref.repoId}/revision/${encodeURIComponent(revision)}`;
    const { value } = await this.getJson<{ sha?: unknown } | null>(url, { ...ref, revision });
    // The commit names the snapshot folder and every file's URL: a commit hash, nothing else.
    if (typeof value?.sha !== 'string' || !GIT_SHA1.test(value.sha)) {
      throw new HttpStatusError(`the Hub gave no commit for ${formatHfRef({ ...ref, revision })}`, { url });
    }
    return value.sha;
  }

  /**
   * Every entry of the repo at `commit`, following the tree API's pages. A next page is
   * followed only on the endpoint's own origin (scheme, host and port): every request carries
   * the token, which is for the Hub alone. A page asked for before, or more pages than any
   * repo has, is a listing that never ends: it fails instead of looping for ever.
   */
  async listTree(ref: HfRef, commit: string): Promise<TreeEntry[]> {
    const entries: TreeEntry[] = [];
    const origin = new URL(this.endpoint).origin;
    let url: string | undefined =
      `${this.endpoint}/api/${apiType(ref.repoType)}/${ref.repoId}/tree/${commit}?recursive=true`;
    const listing = `the Hub's tree listing of ${formatHfRef({ ...ref, revision: commit })}`;
    const guard = new PageGuard({
      maxPages: this.options.maxPages ?? DEFAULTS.maxListPages,
      listing,
      named: 'a page',
      hint: 'the Hub (or the mirror at HF_ENDPOINT) pages wrongly; retry later',
      first: url,
    });
    while (url) {
      const { value, res } = await this.getJson<unknown>(url, ref);
      if (!Array.isArray(value))
        throw new HttpStatusError(`the Hub's tree listing of ${ref.repoId} is not a list`, { url });
      for (const item of value as TreeEntry[]) {
        if (item === null || typeof item !== 'object') continue;
        if ((item.type === 'file' || item.type === 'directory') && typeof item.path === 'string') {
          if (item.type === 'file') checkTreeFile(item, ref, url);
          entries.push(item);
        }
      }
      const next = nextLink(header(res, 'link'), url);
      if (next === undefined) break;
      if (new URL(next).origin !== origin) {
        throw new BadResponseError(
          `${listing} sends its next page to ${new URL(next).origin}, not to ${origin}: not following it`,
          {
            url,
            hint: `the token is sent to ${origin} only; check HF_ENDPOINT (a mirror must page on its own host)`,
          },
        );
      }
      guard.follow(next, { shown: next, url });
      url = next;
    }
    return entries;
  }

  /** HEAD of the file's resolve URL: commit, etag (sha256 for LFS), size. */
  async fileMeta(ref: HfRef, revision: string, path: string): Promise<HubFileMeta> {
    let url = resolveUrl(this.endpoint, ref, revision, path);
    const fileRef = { ...ref, revision, path };
    for (let hop = 0; ; hop++) {
      const res = await this.send('HEAD', url, fileRef);
      res.resume();
      const status = res.statusCode ?? 0;
      const location = header(res, 'location');
      // A relative redirect is a renamed repo: follow it on the Hub's host.
      if (status >= 300 && status < 400 && location && new URL(location, url).host === new URL(url).host) {
        if (hop >= 5) throw new RedirectError(`too many redirects for ${formatHfRef(fileRef)}`, { url });
        url = new URL(location, url).href;
        continue;
      }
      const etag = header(res, 'x-linked-etag') ?? header(res, 'etag');
      const commit = header(res, 'x-repo-commit');
      const size = Number(header(res, 'x-linked-size') ?? (status < 300 ? header(res, 'content-length') : undefined));
      if (!etag || !commit || !Number.isSafeInteger(size)) {
        throw new HttpStatusError(
          `the Hub's answer for ${formatHfRef(fileRef)} lacks ${!etag ? 'an ETag' : !commit ? 'X-Repo-Commit' : 'a size'}`,
          { url, status, hint: 'check HF_ENDPOINT: it must be a Hugging Face Hub' },
        );
      }
      // Both name things on disk (the blob in the HF cache, the snapshot) and go into URLs:
      // only the Hub's own forms are taken.
      const clean = normalizeEtag(etag);
      if (!GIT_SHA1.test(commit) || !(GIT_SHA1.test(clean) || SHA256.test(clean)) || size < 0) {
        throw new BadResponseError(
          `the Hub's answer for ${formatHfRef(fileRef)} has ${
            !GIT_SHA1.test(commit)
              ? `the X-Repo-Commit ${shown(commit)}, not a commit hash (40 lower-case hex digits)`
              : size < 0
                ? `the size ${size}`
                : `the ETag ${shown(etag)}, neither a git sha1 (40 lower-case hex digits) nor a sha256 (64)`
          }`,
          { url, status, hint: 'nothing was downloaded; check HF_ENDPOINT: it must be a Hugging Face Hub' },
        );
      }
      return { commit, etag: clean, size, lfs: SHA256.test(clean) };
    }
  }

  close(): void {
    this.client.close();
  }
}

const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
]);

/** Failures a retry can cure: the connection, not the request. */
function isTransient(err: unknown): boolean {
  if (err instanceof StallError) return true;
  if (err instanceof LoomError) return false;
  return TRANSIENT_CODES.has((err as { code?: string }).code ?? '');
}

function parseRetryAfterMs(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
