// S3's error answers (an XML body with Code and Message) turned into Loom's typed errors:
// refused credentials are one clear error, a missing key or bucket another, throttling and
// 5xx retryable.
import type { IncomingMessage } from 'node:http';
import { HttpStatusError, NotFoundError, S3AccessDeniedError, type LoomError } from '../../core/errors.js';
import { isRetryableStatus, parseRetryAfter } from '../../fetch/retry-policy.js';

export interface S3ErrorBody {
  code: string | undefined;
  message: string | undefined;
}

/** Codes after which fresh credentials or a fresh signature may succeed. */
const CREDENTIAL_CODES = new Set([
  'ExpiredToken',
  'InvalidAccessKeyId',
  'InvalidToken',
  'SignatureDoesNotMatch',
  'TokenRefreshRequired',
  'RequestTimeTooSkewed',
  'RequestExpired',
]);

const MAX_ERROR_BODY = 64 * 1024;

/** Reads an error response's body (bounded) and its S3 Code and Message. */
export async function readS3Error(res: IncomingMessage): Promise<S3ErrorBody> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (length > MAX_ERROR_BODY) break;
      chunks.push(chunk);
    }
  } catch {
    // A broken error body still has its status.
  }
  res.destroy();
  const xml = Buffer.concat(chunks).toString('utf8');
  return { code: xmlText(xml, 'Code'), message: xmlText(xml, 'Message') };
}

/** True when a 400/403 may be cured by re-reading the credentials and signing again. */
export function isCredentialError(status: number, body: S3ErrorBody): boolean {
  if (status !== 400 && status !== 403) return false;
  if (body.code && CREDENTIAL_CODES.has(body.code)) return true;
  // Presigned URLs past X-Amz-Expires: 403 AccessDenied "Request has expired".
  return body.code === 'AccessDenied' && /expired/i.test(body.message ?? '');
}

export function s3Error(res: IncomingMessage, body: S3ErrorBody, what: string, region?: string): LoomError {
  const status = res.statusCode ?? 0;
  const detail = `${body.code ?? `HTTP ${status}`}${body.message ? `: ${body.message}` : ''}`;
  const bucketRegion = res.headers['x-amz-bucket-region'];
  if (typeof bucketRegion === 'string' && bucketRegion !== region) {
    return new HttpStatusError(
      `${what} is in region ${bucketRegion}, not ${region ?? 'the one configured'} (${detail})`,
      {
        url: what,
        status,
        hint: `set AWS_REGION=${bucketRegion}`,
      },
    );
  }
  if (status === 401 || status === 403 || isCredentialError(status, body)) {
    return new S3AccessDeniedError(`S3 refused ${what} (${detail})`, {
      url: what,
      status,
      hint: 'check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE), the region, and the bucket policy',
    });
  }
  if (status === 404) {
    return new NotFoundError(`${what} does not exist (${detail})`, {
      url: what,
      status,
      hint: 'check the bucket, the key and the region',
    });
  }
  const retryAfter = res.headers['retry-after'];
  return new HttpStatusError(`S3 answered ${what} with HTTP ${status} (${detail})`, {
    url: what,
    status,
    retryable: isRetryableStatus(status) || body.code === 'SlowDown',
    retryAfterMs: parseRetryAfter(typeof retryAfter === 'string' ? retryAfter : undefined),
  });
}

/** The text of the first `<tag>` element, entities decoded. */
export function xmlText(xml: string, tag: string): string | undefined {
  const match = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml);
  return match ? decodeXml(match[1]!) : undefined;
}

export function decodeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, entity: string) => {
    if (entity.startsWith('#x')) return String.fromCodePoint(parseInt(entity.slice(2), 16));
    if (entity.startsWith('#')) return String.fromCodePoint(Number(entity.slice(1)));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity]!;
  });
}
