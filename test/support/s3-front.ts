// A front for s3rver that does what s3rver does not: it recomputes every request's SigV4
// signature with an independent signer (@smithy/signature-v4, not the aws4 Loom signs with)
// and answers 403 SignatureDoesNotMatch on a difference, checks presigned URLs' expiry and
// header signatures' clock skew, knows which keys are valid (so keys can be rotated and
// revoked mid-test), and keeps S3's checksums (x-amz-checksum-sha256 on PUT and UploadPart,
// FULL_OBJECT or COMPOSITE, returned on HEAD/GET with x-amz-checksum-mode: ENABLED, and
// HEAD ?partNumber=N), which s3rver 3.7 does not store. Bodies can be slowed and corrupted.
import { createHash } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

export interface FrontKey {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface FrontRequest {
  method: string;
  path: string;
  accessKeyId: string | undefined;
  auth: 'header' | 'query' | 'none';
  range: string | undefined;
  status: number;
  code: string | undefined;
}

interface StoredChecksum {
  type: 'FULL_OBJECT' | 'COMPOSITE';
  value: string;
  partSizes: number[];
  partChecksums: string[];
}

const QUERY_AUTH = [
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-SignedHeaders',
  'X-Amz-Signature',
  'X-Amz-Security-Token',
];

export class S3Front {
  readonly keys = new Map<string, FrontKey>();
  readonly requests: FrontRequest[] = [];
  /** Body bytes per second of each GET answer; undefined = as fast as it goes. */
  bodyRate: number | undefined;
  /** Flip the byte at this offset of the object at this path in every GET answer that holds it. */
  corrupt: { path: string; offset: number } | undefined;
  /**
   * A lying store: the XML of each ListObjectsV2 answer, given the request's query, instead
   * of the store's (undefined: the store's own answer).
   */
  listLie: ((query: URLSearchParams) => string | undefined) | undefined;
  /** Called for each authenticated request before it is forwarded (tests change the store here). */
  onRequest: ((request: FrontRequest) => Promise<void>) | undefined;
  /** Most distinct objects whose GET bodies were being sent at one moment. */
  peakObjectsInFlight = 0;
  /** Object paths with a GET body being sent now, and how many each. */
  private readonly inFlight = new Map<string, number>();
  /** Largest difference between X-Amz-Date and now for header signatures (S3: 15 min). */
  maxSkewMs = 15 * 60_000;
  private readonly checksums = new Map<string, StoredChecksum>();
  private readonly uploads = new Map<string, Map<number, { sha256: Buffer; size: number }>>();
  private server: http.Server | undefined;

  constructor(
    private readonly upstream: string,
    readonly region: string,
  ) {}

  addKey(key: FrontKey): void {
    this.keys.set(key.accessKeyId, key);
  }

  revokeKey(accessKeyId: string): void {
    this.keys.delete(accessKeyId);
  }

  async listen(): Promise<string> {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.reply(res, 500, 'InternalError', String(err));
        else res.destroy();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private readonly entries = new WeakMap<ServerResponse, FrontRequest>();

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://front');
    const body = await readBody(req);
    const entry: FrontRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      accessKeyId: undefined,
      auth: 'none',
      range: req.headers.range,
      status: 0,
      code: undefined,
    };
    this.requests.push(entry);
    this.entries.set(res, entry);
    const refusal = await this.authenticate(req, url, entry);
    if (refusal?.code === 'AuthorizationHeaderMalformed') res.setHeader('x-amz-bucket-region', this.region);
    if (refusal) return this.reply(res, refusal.status, refusal.code, refusal.message);
    await this.onRequest?.(entry);
    const lie =
      req.method === 'GET' && url.searchParams.has('list-type') ? this.listLie?.(url.searchParams) : undefined;
    if (lie !== undefined) {
      entry.status = 200;
      res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(lie) });
      res.end(lie);
      return;
    }

    const objectPath = decodeURIComponent(url.pathname);
    const uploadId = url.searchParams.get('uploadId');
    const partNumber = url.searchParams.get('partNumber');
    const claimed = req.headers['x-amz-checksum-sha256'];
    const sha = createHash('sha256').update(body).digest();
    if (req.method === 'PUT' && typeof claimed === 'string' && claimed !== sha.toString('base64')) {
      return this.reply(res, 400, 'BadDigest', 'The SHA256 you specified did not match the calculated checksum.');
    }
    if (req.method === 'HEAD' && partNumber && !uploadId)
      return this.headPart(req, res, url, objectPath, Number(partNumber));

    const upstream = await this.forward(req, url, body);
    const headers = { ...upstream.headers };
    const status = upstream.statusCode ?? 0;
    if (status === 206 && headers['content-range'] === 'bytes 0-0/0') {
      // s3rver claims one byte of an empty object; S3 refuses the range instead.
      upstream.destroy();
      res.setHeader('content-range', 'bytes */0');
      return this.reply(res, 416, 'InvalidRange', 'The requested range is not satisfiable');
    }
    if (status < 300) {
      if (req.method === 'PUT' && uploadId && partNumber) {
        if (!this.uploads.has(uploadId)) this.uploads.set(uploadId, new Map());
        this.uploads.get(uploadId)!.set(Number(partNumber), { sha256: sha, size: body.length });
      } else if (req.method === 'PUT' || req.method === 'DELETE') {
        this.checksums.delete(objectPath);
        if (req.method === 'PUT' && typeof claimed === 'string') {
          this.checksums.set(objectPath, {
            type: 'FULL_OBJECT',
            value: claimed,
            partSizes: [body.length],
            partChecksums: [claimed],
          });
        }
      } else if (req.method === 'POST' && uploadId) {
        this.completeUpload(objectPath, uploadId);
      }
      const stored = this.checksums.get(objectPath);
      const wantsChecksum = req.headers['x-amz-checksum-mode'] === 'ENABLED' && !req.headers.range;
      if (stored && wantsChecksum && (req.method === 'GET' || req.method === 'HEAD')) {
        headers['x-amz-checksum-sha256'] = stored.value;
        headers['x-amz-checksum-type'] = stored.type;
      }
    }
    entry.status = status;
    res.writeHead(status, headers);
    if (req.method === 'GET' && status < 300) {
      await this.sendBody(upstream, res, objectPath, headers['content-range']);
    } else {
      upstream.pipe(res);
    }
  }

  private completeUpload(objectPath: string, uploadId: string): void {
    const parts = [
      ...(this.uploads.get(uploadId) ?? new Map<number, { sha256: Buffer; size: number }>()).entries(),
    ].sort((a, b) => a[0] - b[0]);
    this.uploads.delete(uploadId);
    if (parts.length === 0) return;
    const outer = createHash('sha256');
    for (const [, part] of parts) outer.update(part.sha256);
    this.checksums.set(objectPath, {
      type: 'COMPOSITE',
      value: `${outer.digest('base64')}-${parts.length}`,
      partSizes: parts.map(([, p]) => p.size),
      partChecksums: parts.map(([, p]) => p.sha256.toString('base64')),
    });
  }

  /** HEAD ?partNumber=N: S3 answers with that part's length and the number of parts. */
  private async headPart(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    objectPath: string,
    n: number,
  ): Promise<void> {
    const stored = this.checksums.get(objectPath);
    const plain = new URL(url);
    plain.searchParams.delete('partNumber');
    const upstream = await this.forward(req, plain, Buffer.alloc(0));
    upstream.resume();
    if ((upstream.statusCode ?? 0) >= 300) return this.reply(res, upstream.statusCode ?? 500, undefined, '');
    const sizes = stored?.partSizes ?? [Number(upstream.headers['content-length'])];
    if (n < 1 || n > sizes.length)
      return this.reply(res, 416, 'InvalidPartNumber', 'The requested partnumber is not satisfiable');
    const headers: http.OutgoingHttpHeaders = {
      etag: upstream.headers.etag,
      'content-length': sizes[n - 1],
      'x-amz-mp-parts-count': sizes.length,
    };
    if (stored && req.headers['x-amz-checksum-mode'] === 'ENABLED')
      headers['x-amz-checksum-sha256'] = stored.partChecksums[n - 1];
    this.entries.get(res)!.status = 206;
    res.writeHead(206, headers);
    res.end();
  }

  private forward(req: IncomingMessage, url: URL, body: Buffer): Promise<IncomingMessage> {
    const query = new URLSearchParams(url.search);
    for (const name of QUERY_AUTH) query.delete(name);
    const target = new URL(`${url.pathname}${query.size ? `?${query.toString()}` : ''}`, this.upstream);
    const headers = { ...req.headers };
    delete headers.authorization;
    delete headers['x-amz-security-token'];
    delete headers.host;
    if (body.length > 0 || req.method === 'PUT' || req.method === 'POST')
      headers['content-length'] = String(body.length);
    delete headers['transfer-encoding'];
    return new Promise((resolve, reject) => {
      const out = http.request(target, { method: req.method, headers }, resolve);
      out.once('error', reject);
      out.end(body);
    });
  }

  /** Streams a GET body, paced to bodyRate, with the corrupt byte flipped where asked. */
  private async sendBody(
    upstream: IncomingMessage,
    res: ServerResponse,
    objectPath: string,
    contentRange: string | string[] | undefined,
  ): Promise<void> {
    this.inFlight.set(objectPath, (this.inFlight.get(objectPath) ?? 0) + 1);
    this.peakObjectsInFlight = Math.max(this.peakObjectsInFlight, this.inFlight.size);
    res.once('close', () => {
      const left = (this.inFlight.get(objectPath) ?? 1) - 1;
      if (left > 0) this.inFlight.set(objectPath, left);
      else this.inFlight.delete(objectPath);
    });
    let offset = Number(/^bytes (\d+)-/.exec(String(contentRange ?? ''))?.[1] ?? 0);
    const closed = new Promise<void>((resolve) => res.once('close', resolve));
    let gone = false;
    void closed.then(() => (gone = true));
    try {
      for await (const raw of upstream as AsyncIterable<Buffer>) {
        for (let at = 0; at < raw.length && !gone; at += 16 * 1024) {
          let chunk = raw.subarray(at, at + 16 * 1024);
          const bad = this.corrupt;
          if (bad && bad.path === objectPath && bad.offset >= offset && bad.offset < offset + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[bad.offset - offset] ^= 0xff;
          }
          offset += chunk.length;
          if (!res.write(chunk)) await Promise.race([new Promise((r) => res.once('drain', r)), closed]);
          if (this.bodyRate) await new Promise((r) => setTimeout(r, (chunk.length / this.bodyRate!) * 1000));
        }
        if (gone) break;
      }
    } finally {
      upstream.destroy();
      res.end();
    }
  }

  /** Checks the request's signature; returns the refusal S3 would answer, if any. */
  private async authenticate(
    req: IncomingMessage,
    url: URL,
    entry: FrontRequest,
  ): Promise<{ status: number; code: string; message: string } | undefined> {
    const headerAuth = req.headers.authorization;
    const queryAuth = url.searchParams.get('X-Amz-Algorithm');
    if (!headerAuth && !queryAuth) {
      return { status: 403, code: 'AccessDenied', message: 'Anonymous access is forbidden for this operation' };
    }
    entry.auth = headerAuth ? 'header' : 'query';
    const credential = headerAuth
      ? /Credential=([^,]+)/.exec(headerAuth)?.[1]
      : (url.searchParams.get('X-Amz-Credential') ?? undefined);
    const signedList = headerAuth
      ? /SignedHeaders=([^,]+)/.exec(headerAuth)?.[1]
      : (url.searchParams.get('X-Amz-SignedHeaders') ?? undefined);
    const provided = headerAuth
      ? /Signature=([0-9a-f]+)/.exec(headerAuth)?.[1]
      : url.searchParams.get('X-Amz-Signature');
    const amzDate = headerAuth ? req.headers['x-amz-date'] : url.searchParams.get('X-Amz-Date');
    if (!credential || !signedList || !provided || typeof amzDate !== 'string') {
      return { status: 400, code: 'AuthorizationHeaderMalformed', message: 'The authorization is incomplete' };
    }
    const [accessKeyId, , region] = credential.split('/');
    entry.accessKeyId = accessKeyId;
    if (region !== this.region) {
      return {
        status: 400,
        code: 'AuthorizationHeaderMalformed',
        message: `The authorization header is malformed; the region '${region}' is wrong; expecting '${this.region}'`,
      };
    }
    const key = this.keys.get(accessKeyId ?? '');
    if (!key) {
      return {
        status: 403,
        code: 'InvalidAccessKeyId',
        message: 'The AWS Access Key Id you provided does not exist in our records.',
      };
    }
    const token = headerAuth ? req.headers['x-amz-security-token'] : url.searchParams.get('X-Amz-Security-Token');
    if ((key.sessionToken ?? null) !== (token ?? null)) {
      return { status: 400, code: 'InvalidToken', message: 'The provided token is malformed or otherwise invalid.' };
    }
    const signingDate = parseAmzDate(amzDate);
    if (headerAuth && Math.abs(Date.now() - signingDate.getTime()) > this.maxSkewMs) {
      return {
        status: 403,
        code: 'RequestTimeTooSkewed',
        message: 'The difference between the request time and the current time is too large.',
      };
    }
    const expires = Number(url.searchParams.get('X-Amz-Expires'));
    if (queryAuth && Date.now() > signingDate.getTime() + expires * 1000) {
      return { status: 403, code: 'AccessDenied', message: 'Request has expired' };
    }
    const signer = new SignatureV4({
      credentials: key,
      region: this.region,
      service: 's3',
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const signed = new Set(signedList.split(';'));
    const headers: Record<string, string> = {};
    for (const name of signed) headers[name] = String(req.headers[name] ?? '');
    const query: Record<string, string> = {};
    for (const [name, value] of url.searchParams) if (!queryAuth || !QUERY_AUTH.includes(name)) query[name] = value;
    const request = {
      method: req.method ?? 'GET',
      protocol: 'http:',
      hostname: '127.0.0.1',
      path: url.pathname,
      query,
      headers,
    };
    let expected: string | undefined;
    if (headerAuth) {
      const out = await signer.sign(request, { signingDate, signableHeaders: signed });
      expected = /Signature=([0-9a-f]+)/.exec(String(out.headers.authorization))?.[1];
    } else {
      // A presigned URL signs an unsigned payload.
      request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      const out = await signer.presign(request, {
        signingDate,
        expiresIn: expires,
        signableHeaders: signed,
        unsignableHeaders: new Set(['x-amz-content-sha256']),
        unhoistableHeaders: new Set(['x-amz-content-sha256']),
      });
      expected = out.query?.['X-Amz-Signature'] as string | undefined;
    }
    if (expected !== provided) {
      return {
        status: 403,
        code: 'SignatureDoesNotMatch',
        message: 'The request signature we calculated does not match the signature you provided.',
      };
    }
    return undefined;
  }

  private reply(res: ServerResponse, status: number, code: string | undefined, message: string): void {
    const entry = this.entries.get(res);
    if (entry) {
      entry.status = status;
      entry.code = code;
    }
    const xml = code
      ? `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`
      : '';
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(xml);
  }
}

function parseAmzDate(value: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return new Date(NaN);
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}
