// A real S3-compatible store for tests: s3rver on port 0 in a temporary directory, behind
// the signature-checking front (s3-front.ts). s3rver runs in a child process with OpenSSL's
// legacy provider: its ListObjectsV2 continuation tokens are DES-encrypted, which Node 20's
// OpenSSL 3 refuses otherwise (every truncated page would be a 500). Fixtures are uploaded through the front,
// signed with @smithy/signature-v4 (never with aws4, which Loom signs with).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import { S3Front, type FrontKey } from './s3-front.js';

export const REGION = 'eu-test-1';

export interface S3TestStore {
  /** The front's base URL: give it as the S3 endpoint. */
  endpoint: string;
  front: S3Front;
  /** A key the front accepts (also used for fixtures). */
  key: FrontKey;
  /** Uploads with one PUT; `checksum` sends x-amz-checksum-sha256 (FULL_OBJECT). */
  put(bucket: string, key: string, bytes: Buffer, options?: { checksum?: boolean }): Promise<void>;
  /** Uploads as a multipart upload with a sha256 per part (a COMPOSITE checksum). */
  putMultipart(bucket: string, key: string, bytes: Buffer, partSize: number): Promise<void>;
  close(): Promise<void>;
}

export async function startS3Store(buckets: string[]): Promise<S3TestStore> {
  const directory = await mkdtemp(join(tmpdir(), 'loom-s3rver-'));
  const { port, stop } = await runS3rver(directory, buckets);
  const front = new S3Front(`http://127.0.0.1:${port}`, REGION);
  const key: FrontKey = { accessKeyId: 'AKIAFIXTURE', secretAccessKey: `fixture-${randomBytes(8).toString('hex')}` };
  front.addKey(key);
  const endpoint = await front.listen();
  const signer = new SignatureV4({
    credentials: key,
    region: REGION,
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
  });

  const send = async (
    method: string,
    path: string,
    query: Record<string, string>,
    body: Buffer,
    headers: Record<string, string> = {},
  ): Promise<string> => {
    const url = new URL(endpoint);
    const request = await signer.sign({
      method,
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path,
      query,
      headers: {
        host: url.host,
        'content-length': String(body.length),
        'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'),
        ...headers,
      },
      body,
    });
    const search = new URLSearchParams(query).toString();
    return new Promise((resolve, reject) => {
      const req = http.request(
        `${endpoint}${path}${search ? `?${search}` : ''}`,
        { method, headers: request.headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if ((res.statusCode ?? 0) >= 300) reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`));
            else resolve(text);
          });
        },
      );
      req.once('error', reject);
      req.end(body);
    });
  };
  const sha256b64 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('base64');
  const objectPath = (bucket: string, k: string): string =>
    `/${bucket}/${k.split('/').map(encodeURIComponent).join('/')}`;

  return {
    endpoint,
    front,
    key,
    async put(bucket, k, bytes, options = {}) {
      await send(
        'PUT',
        objectPath(bucket, k),
        {},
        bytes,
        options.checksum ? { 'x-amz-checksum-sha256': sha256b64(bytes) } : {},
      );
    },
    async putMultipart(bucket, k, bytes, partSize) {
      const path = objectPath(bucket, k);
      const created = await send('POST', path, { uploads: '' }, Buffer.alloc(0), {
        'x-amz-checksum-algorithm': 'SHA256',
      });
      const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(created)?.[1];
      if (!uploadId) throw new Error(`no UploadId in ${created}`);
      const parts: string[] = [];
      for (let n = 1, at = 0; at < bytes.length; n++, at += partSize) {
        const part = bytes.subarray(at, at + partSize);
        await send('PUT', path, { partNumber: String(n), uploadId }, part, {
          'x-amz-checksum-sha256': sha256b64(part),
        });
        const etag = `"${createHash('md5').update(part).digest('hex')}"`;
        parts.push(`<Part><PartNumber>${n}</PartNumber><ETag>${etag}</ETag></Part>`);
      }
      const complete = Buffer.from(`<CompleteMultipartUpload>${parts.join('')}</CompleteMultipartUpload>`);
      await send('POST', path, { uploadId }, complete, { 'content-type': 'application/xml' });
    },
    async close() {
      await front.close();
      await stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** Starts s3rver in a child process; resolves with its port once it listens. */
async function runS3rver(directory: string, buckets: string[]): Promise<{ port: number; stop: () => Promise<void> }> {
  const main = createRequire(import.meta.url).resolve('s3rver');
  const script = `
    const S3rver = require(${JSON.stringify(main)});
    const server = new S3rver(${JSON.stringify({
      address: '127.0.0.1',
      port: 0,
      silent: true,
      directory,
      configureBuckets: buckets.map((name) => ({ name })),
    })});
    server.run().then((address) => process.stdout.write(JSON.stringify(address) + '\\n'));
    process.stdin.on('end', () => process.exit(0)).resume();
  `;
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', script], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    child.once('error', reject);
  });
  return {
    port,
    // Closing stdin ends the child (also when this process dies first).
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.stdin.end();
      }),
  };
}
