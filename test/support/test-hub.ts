// A test Hugging Face Hub: the endpoints Loom (and @huggingface/hub) use, as the field notes
// describe them, on one port, and a separate CDN on a second port. LFS files redirect (302)
// to the CDN with a signed URL that expires; small files are served by the Hub itself. It
// can be gated, rate-limited, made to corrupt or slow the CDN's bytes, or to lie (tree
// entries, next links, resolve headers: treeLie, nextLinkLie, resolveHeaderLies), and it counts
// every byte each server sends and every Authorization header the CDN receives.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export type TestRepoType = 'model' | 'dataset';

export interface TestHubFile {
  path: string;
  bytes: Buffer;
  /** Stored with LFS (served by the CDN, identified by sha256). Default: size >= 1 KiB. */
  lfs?: boolean;
}

export interface TestHubRepo {
  id: string;
  type?: TestRepoType;
  /** Commits by hash, each with its files; the first is what `main` points to unless `refs` says. */
  commits: { sha: string; files: TestHubFile[] }[];
  /** Branch and tag names to commit hashes. Default: main -> the first commit. */
  refs?: Record<string, string>;
  /** Needs a token: 401 GatedRepo without one, 403 GatedRepo with one that was not granted. */
  gated?: boolean;
}

export interface TestHubOptions {
  repos: TestHubRepo[];
  /** Tokens the Hub accepts; a gated repo is open to the first one only. */
  tokens?: string[];
  /** Tree entries per page of the tree API. Default 50. */
  pageSize?: number;
  /** How long a signed CDN URL stays valid. Default 1 h. */
  signatureTtlMs?: number;
  /** Hub delay before each response's head (API and resolve). */
  hubFirstByteMs?: number;
  /** CDN delay before each response's head. */
  cdnFirstByteMs?: number;
  /** CDN cap per response, bytes per second. */
  cdnBytesPerSecond?: number;
}

export interface HubEntry {
  type: 'file' | 'directory';
  path: string;
  size: number;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

export interface TestHubStats {
  /** Body bytes the CDN sent. */
  cdnBytes: number;
  /** Body bytes of files the Hub served itself (small files). */
  hubFileBytes: number;
  /** CDN requests that carried an Authorization header (must stay 0). */
  cdnAuthorizationHeaders: number;
  /** CDN requests refused with 403 because their signature had expired. */
  cdnExpired: number;
  cdnRequests: number;
  /** Hub requests by kind: "revision", "tree", "paths-info", "resolve". */
  hubRequests: Record<string, number>;
  /** Most requests for file bytes (CDN, and small files from the Hub) open at one moment. */
  peakFileRequests: number;
}

export function gitBlobSha1(bytes: Buffer): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

export function sha256Hex(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A 40-hex commit hash derived from a name, for readable fixtures. */
export function commitHash(name: string): string {
  return createHash('sha1').update(`commit ${name}`).digest('hex');
}

interface StoredFile {
  path: string;
  bytes: Buffer;
  lfs: boolean;
  sha256: string;
  sha1: string;
}

const LFS_DEFAULT_THRESHOLD = 1024;

export class TestHub {
  readonly stats: TestHubStats = {
    cdnBytes: 0,
    hubFileBytes: 0,
    cdnAuthorizationHeaders: 0,
    cdnExpired: 0,
    cdnRequests: 0,
    hubRequests: {},
    peakFileRequests: 0,
  };
  /** sha256s (LFS, from the CDN) and git sha1s (small files, from the Hub) sent with one byte flipped. */
  readonly corrupt = new Set<string>();
  /** The next this many API requests answer 429 with this Retry-After (seconds). */
  rateLimit = { remaining: 0, retryAfterSeconds: 1 };
  /** A lying Hub: rewrites each tree page's entries before they are sent. */
  treeLie: ((entries: HubEntry[]) => unknown[]) | undefined;
  /** A lying Hub: the `Link: rel="next"` URL of each tree page (given the page's URL); undefined, none. */
  nextLinkLie: ((page: URL) => string | undefined) | undefined;
  /** A lying Hub: headers set on every resolve answer over the true ones (X-Repo-Commit, ETag…). */
  resolveHeaderLies: Record<string, string> | undefined;
  signatureTtlMs: number;
  private readonly secret = randomBytes(16);
  private readonly blobs = new Map<string, StoredFile>();
  private readonly stored = new WeakMap<TestHubFile, StoredFile>();
  private readonly hub: http.Server;
  private readonly cdn: http.Server;
  private readonly sockets = new Set<Socket>();
  private hubPort = 0;
  private cdnPort = 0;

  constructor(private readonly options: TestHubOptions) {
    this.signatureTtlMs = options.signatureTtlMs ?? 3_600_000;
    for (const repo of options.repos) {
      for (const commit of repo.commits) for (const file of commit.files) this.store(file);
    }
    this.hub = http.createServer((req, res) => {
      this.serveHub(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
        else res.destroy();
      });
    });
    this.cdn = http.createServer((req, res) => {
      this.serveCdn(req, res).catch(() => res.destroy());
    });
    for (const server of [this.hub, this.cdn]) {
      server.on('connection', (socket) => {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
      });
    }
  }

  static async start(options: TestHubOptions): Promise<TestHub> {
    const hub = new TestHub(options);
    await hub.listen();
    return hub;
  }

  private async listen(): Promise<void> {
    const listen = (server: http.Server): Promise<number> =>
      new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
    this.hubPort = await listen(this.hub);
    this.cdnPort = await listen(this.cdn);
  }

  /** The Hub's base URL (HF_ENDPOINT). */
  get endpoint(): string {
    return `http://127.0.0.1:${this.hubPort}`;
  }

  /** The CDN's base URL: another port, so another host as far as credentials go. */
  get cdnOrigin(): string {
    return `http://127.0.0.1:${this.cdnPort}`;
  }

  resetStats(): void {
    Object.assign(this.stats, {
      cdnBytes: 0,
      hubFileBytes: 0,
      cdnAuthorizationHeaders: 0,
      cdnExpired: 0,
      cdnRequests: 0,
      hubRequests: {},
      peakFileRequests: 0,
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all([this.hub, this.cdn].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  private store(file: TestHubFile): StoredFile {
    const known = this.stored.get(file);
    if (known) return known;
    const stored: StoredFile = {
      path: file.path,
      bytes: file.bytes,
      lfs: file.lfs ?? file.bytes.length >= LFS_DEFAULT_THRESHOLD,
      sha256: sha256Hex(file.bytes),
      sha1: gitBlobSha1(file.bytes),
    };
    if (stored.lfs) this.blobs.set(stored.sha256, stored);
    this.stored.set(file, stored);
    return stored;
  }

  private openFileRequests = 0;

  /** Counts a request for file bytes as open until its response closes. */
  private fileRequest(res: ServerResponse): void {
    this.openFileRequests++;
    this.stats.peakFileRequests = Math.max(this.stats.peakFileRequests, this.openFileRequests);
    res.once('close', () => this.openFileRequests--);
  }

  private count(kind: string): void {
    this.stats.hubRequests[kind] = (this.stats.hubRequests[kind] ?? 0) + 1;
  }

  /** The tree entries of a commit: files, and the directories that hold them. */
  private entriesOf(files: TestHubFile[]): HubEntry[] {
    const entries: HubEntry[] = [];
    const dirs = new Set<string>();
    for (const file of files) {
      const parts = file.path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!dirs.has(dir)) {
          dirs.add(dir);
          entries.push({ type: 'directory', path: dir, size: 0, oid: createHash('sha1').update(dir).digest('hex') });
        }
      }
      const { lfs, sha1, sha256 } = this.store(file);
      entries.push({
        type: 'file',
        path: file.path,
        size: file.bytes.length,
        // For an LFS file the git blob is the pointer file; its sha1 is not the content's.
        oid: lfs ? gitBlobSha1(Buffer.from(`lfs pointer ${sha256}`)) : sha1,
        ...(lfs && { lfs: { oid: sha256, size: file.bytes.length, pointerSize: 134 } }),
      });
    }
    return entries.sort((a, b) => a.path.localeCompare(b.path));
  }

  private error(res: ServerResponse, status: number, code: string | undefined, message: string): void {
    const body = JSON.stringify({ error: message });
    res
      .writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        ...(code && { 'x-error-code': code, 'x-error-message': message }),
      })
      .end(body);
  }

  /** Auth and lookup shared by every endpoint; answers the error itself and returns undefined. */
  private findRepo(
    req: IncomingMessage,
    res: ServerResponse,
    type: TestRepoType,
    id: string,
    revision: string,
  ): { repo: TestHubRepo; commit: { sha: string; files: TestHubFile[] } } | undefined {
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const tokens = this.options.tokens ?? [];
    if (token !== undefined && !tokens.includes(token)) {
      this.error(res, 401, undefined, 'Invalid credentials in Authorization header');
      return undefined;
    }
    const repo = this.options.repos.find((r) => r.id === id && (r.type ?? 'model') === type);
    if (!repo) {
      this.error(res, 404, 'RepoNotFound', 'Repository not found');
      return undefined;
    }
    if (repo.gated && token === undefined) {
      this.error(res, 401, 'GatedRepo', `Access to model ${id} is restricted. You must have access to it.`);
      return undefined;
    }
    if (repo.gated && token !== tokens[0]) {
      this.error(res, 403, 'GatedRepo', `Access to model ${id} is restricted and you are not in the authorized list.`);
      return undefined;
    }
    const refs = repo.refs ?? { main: repo.commits[0]!.sha };
    const sha = refs[revision] ?? revision;
    const commit = repo.commits.find((c) => c.sha === sha);
    if (!commit) {
      this.error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      return undefined;
    }
    return { repo, commit };
  }

  private async serveHub(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.options.hubFirstByteMs) await sleep(this.options.hubFirstByteMs);
    const url = new URL(req.url ?? '/', this.endpoint);
    const segments = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (segments[0] === 'api') {
      if (this.rateLimit.remaining > 0) {
        this.rateLimit.remaining--;
        res.setHeader('retry-after', String(this.rateLimit.retryAfterSeconds));
        this.error(res, 429, undefined, 'Too Many Requests');
        return;
      }
      // /api/{models|datasets}/{org}/{name}/{revision|tree|paths-info}/{rev}[/...]
      const type = segments[1] === 'datasets' ? 'dataset' : segments[1] === 'models' ? 'model' : undefined;
      const id = `${segments[2]}/${segments[3]}`;
      const kind = segments[4];
      const revision = segments[5] ?? 'main';
      if (!type || !kind) return this.error(res, 404, undefined, 'not found');
      this.count(kind);
      const found = this.findRepo(req, res, type, id, revision);
      if (!found) return;
      const entries = this.entriesOf(found.commit.files);
      if (kind === 'revision') {
        return json(res, {
          id,
          sha: found.commit.sha,
          siblings: found.commit.files.map((f) => ({ rfilename: f.path })),
        });
      }
      if (kind === 'tree') {
        const recursive = url.searchParams.get('recursive') === 'true';
        const listed = recursive ? entries : entries.filter((e) => !e.path.includes('/'));
        const cursor = Number(url.searchParams.get('cursor') ?? 0);
        const pageSize = this.options.pageSize ?? 50;
        const page = listed.slice(cursor, cursor + pageSize);
        if (this.nextLinkLie) {
          const lie = this.nextLinkLie(url);
          if (lie !== undefined) res.setHeader('link', `<${lie}>; rel="next"`);
        } else if (cursor + pageSize < listed.length) {
          const next = new URL(url.href);
          next.searchParams.set('cursor', String(cursor + pageSize));
          res.setHeader('link', `<${next.href}>; rel="next"`);
        }
        return json(res, this.treeLie ? this.treeLie(page) : page);
      }
      if (kind === 'paths-info' && req.method === 'POST') {
        const body = JSON.parse((await readBody(req)).toString('utf8')) as { paths?: string[] };
        const wanted = new Set(body.paths ?? []);
        return json(
          res,
          entries.filter((e) => wanted.has(e.path)),
        );
      }
      return this.error(res, 404, undefined, 'not found');
    }
    // /[datasets/]{org}/{name}/resolve/{rev}/{path...}
    const typed = segments[0] === 'datasets' ? segments.slice(1) : segments;
    const type: TestRepoType = segments[0] === 'datasets' ? 'dataset' : 'model';
    if (typed[2] !== 'resolve' || typed.length < 5) return this.error(res, 404, undefined, 'not found');
    this.count('resolve');
    const found = this.findRepo(req, res, type, `${typed[0]}/${typed[1]}`, typed[3]!);
    if (!found) return;
    const path = typed.slice(4).join('/');
    const file = found.commit.files.find((f) => f.path === path);
    if (!file) return this.error(res, 404, 'EntryNotFound', `${path} does not exist on "${typed[3]}"`);
    const stored = this.store(file);
    res.setHeader('x-repo-commit', found.commit.sha);
    const lies = this.resolveHeaderLies ?? {};
    if (stored.lfs) {
      const expires = Date.now() + this.signatureTtlMs;
      const location = `${this.cdnOrigin}/blobs/${stored.sha256}?expires=${expires}&sig=${this.sign(stored.sha256, expires)}`;
      res
        .writeHead(302, {
          location,
          'x-linked-etag': `"${stored.sha256}"`,
          'x-linked-size': String(stored.bytes.length),
          etag: `"${stored.sha1}"`,
          'content-length': 0,
          ...lies,
        })
        .end();
      return;
    }
    const etag = `"${stored.sha1}"`;
    if (req.headers['if-none-match'] === etag) {
      res.writeHead(304, { etag, ...lies }).end();
      return;
    }
    if (req.method === 'GET') this.fileRequest(res);
    let bytes = stored.bytes;
    if (this.corrupt.has(stored.sha1)) {
      bytes = Buffer.from(bytes);
      bytes[0] = bytes[0]! ^ 0xff;
    }
    this.stats.hubFileBytes += sendBytes(req, res, bytes, etag, lies);
  }

  private sign(sha256: string, expires: number): string {
    return createHmac('sha256', this.secret).update(`${sha256}:${expires}`).digest('hex');
  }

  private async serveCdn(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.cdnRequests++;
    if (req.method === 'GET') this.fileRequest(res);
    if (req.headers.authorization !== undefined) this.stats.cdnAuthorizationHeaders++;
    const url = new URL(req.url ?? '/', this.cdnOrigin);
    const sha256 = url.pathname.replace(/^\/blobs\//, '');
    const expires = Number(url.searchParams.get('expires'));
    const blob = this.blobs.get(sha256);
    if (this.options.cdnFirstByteMs) await sleep(this.options.cdnFirstByteMs);
    if (!blob || url.searchParams.get('sig') !== this.sign(sha256, expires)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('AccessDenied\n');
      return;
    }
    if (Date.now() > expires) {
      this.stats.cdnExpired++;
      res.writeHead(403, { 'content-type': 'text/plain' }).end('Request has expired\n');
      return;
    }
    let bytes = blob.bytes;
    if (this.corrupt.has(sha256)) {
      bytes = Buffer.from(bytes);
      const at = bytes.length >> 1;
      bytes[at] = bytes[at]! ^ 0xff;
    }
    await sendBytesPaced(req, res, bytes, `"${sha256}"`, this.options.cdnBytesPerSecond, (sent) => {
      this.stats.cdnBytes += sent;
    });
  }
}

function json(res: ServerResponse, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function rangeOf(req: IncomingMessage, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (!match) return undefined;
  const start = Number(match[1]);
  const end = Math.min(match[2] ? Number(match[2]) + 1 : size, size);
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** Writes the head for a (ranged) answer; returns the body slice to send. */
function head(
  req: IncomingMessage,
  res: ServerResponse,
  bytes: Buffer,
  etag: string,
  extra: Record<string, string> = {},
): Buffer | undefined {
  const range = rangeOf(req, bytes.length);
  if (range === 'unsatisfiable') {
    res.writeHead(416, { 'content-range': `bytes */${bytes.length}`, etag }).end();
    return undefined;
  }
  const common = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', ...extra };
  if (range) {
    res.writeHead(206, {
      ...common,
      'content-range': `bytes ${range.start}-${range.end - 1}/${bytes.length}`,
      'content-length': range.end - range.start,
    });
    return bytes.subarray(range.start, range.end);
  }
  res.writeHead(200, { ...common, 'content-length': bytes.length });
  return bytes;
}

function sendBytes(
  req: IncomingMessage,
  res: ServerResponse,
  bytes: Buffer,
  etag: string,
  extra: Record<string, string> = {},
): number {
  const body = head(req, res, bytes, etag, extra);
  if (!body) return 0;
  if (req.method === 'HEAD') {
    res.end();
    return 0;
  }
  res.end(body);
  return body.length;
}

/**
 * Sends in 256 KiB slices, sleeping to hold `bytesPerSecond`, and counts each slice as the
 * socket takes it (`onSent`): counted when the response ended instead, after its last pacing
 * sleep, the bytes of a client that exits as its last byte arrives were not counted yet (a
 * pull's `transferredBytes` looked 2 MiB above the CDN's count).
 */
async function sendBytesPaced(
  req: IncomingMessage,
  res: ServerResponse,
  bytes: Buffer,
  etag: string,
  bytesPerSecond: number | undefined,
  onSent: (bytes: number) => void,
): Promise<void> {
  const body = head(req, res, bytes, etag);
  if (!body) return;
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const slice = 256 * 1024;
  const started = performance.now();
  let sent = 0;
  for (let at = 0; at < body.length && !res.destroyed; at += slice) {
    const part = body.subarray(at, at + slice);
    sent += part.length;
    onSent(part.length);
    if (!res.write(part)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          res.off('drain', done).off('close', done);
          resolve();
        };
        res.on('drain', done).on('close', done);
      });
    }
    if (bytesPerSecond) {
      const due = (sent / bytesPerSecond) * 1000 - (performance.now() - started);
      if (due > 1) await sleep(due);
    }
  }
  if (!res.destroyed) res.end();
}
