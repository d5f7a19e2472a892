// One signed S3 request: credentials asked for at send time (so rotated ones are used and
// X-Amz-Date is fresh), signed with SigV4 or sent to a presigned URL, and sent once more
// with re-read credentials or a new presigned URL when S3 says the old ones no longer hold.
import type { IncomingMessage } from 'node:http';
import { DEFAULTS } from '../../core/defaults.js';
import { HttpClient } from '../http-client.js';
import { resolveS3Endpoint, objectUrl, type S3Endpoint, type S3EndpointOptions } from './s3-config.js';
import { defaultCredentialProvider, type AwsCredentialProvider } from './s3-credentials.js';
import { isCredentialError, readS3Error, s3Error } from './s3-errors.js';
import { presignedUrl, signedHeaders } from './s3-signer.js';
import type { S3Location } from './s3-uri.js';

export interface S3Options extends S3EndpointOptions {
  /** Where credentials come from: a provider, 'anonymous' (unsigned), default the AWS chain. */
  credentials?: AwsCredentialProvider | 'anonymous';
  /** Profile of the shared config files for the default chain (else AWS_PROFILE). */
  profile?: string;
  /** Abort a request idle this long. Default DEFAULTS.stallTimeoutMs. */
  stallTimeoutMs?: number;
  /** Sockets per host. Default DEFAULTS.workers. */
  maxSockets?: number;
  caCertFiles?: readonly string[];
  /**
   * Fetch object bytes through presigned URLs valid this many seconds (for gateways that
   * accept query authentication only), made anew when S3 says one expired. Default: every
   * request signed in its headers.
   */
  presignExpiresSeconds?: number;
}

export interface S3Request {
  method: 'GET' | 'HEAD';
  location: S3Location;
  query?: URLSearchParams;
  /** Sent and signed (Range is sent but never signed). */
  headers?: Record<string, string>;
  signal: AbortSignal;
  /** Statuses >= 400 handed back instead of thrown (416, 412). */
  passStatuses?: readonly number[];
  /** Use the source's presigned URL for this object (GETs of object bytes). */
  presigned?: boolean;
}

export class S3Requester {
  readonly endpoint: S3Endpoint;
  private readonly client: HttpClient;
  private readonly credentials: AwsCredentialProvider | undefined;
  private readonly stallTimeoutMs: number;
  private presigned: URL | undefined;
  /** Requests S3 refused as expired or badly signed, then sent again (for logs and tests). */
  resigned = 0;

  constructor(private readonly options: S3Options = {}) {
    this.endpoint = resolveS3Endpoint(options);
    this.client = new HttpClient({
      maxSockets: options.maxSockets ?? DEFAULTS.workers,
      caCertFiles: options.caCertFiles,
      connectTimeoutMs: options.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs,
    });
    const creds = options.credentials;
    this.credentials = creds === 'anonymous' ? undefined : (creds ?? defaultCredentialProvider(options.profile));
    this.stallTimeoutMs = options.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs;
  }

  urlOf(location: S3Location): URL {
    return objectUrl(this.endpoint, location);
  }

  /** Sends the request; a refusal of the credentials gets one retry with fresh ones. */
  async send(req: S3Request, stallTimeoutMs = this.stallTimeoutMs): Promise<IncomingMessage> {
    let refresh = false;
    for (let attempt = 0; ; attempt++) {
      const res = await this.sendOnce(req, stallTimeoutMs, refresh);
      const status = res.statusCode ?? 0;
      // S3 never redirects a well-addressed request: a 301/307 names another region.
      if (status < 300 || status === 304 || req.passStatuses?.includes(status)) return res;
      const body = req.method === 'HEAD' ? { code: headCode(status), message: undefined } : await readS3Error(res);
      if (req.method === 'HEAD') res.resume();
      const retryable =
        this.credentials && (isCredentialError(status, body) || (req.method === 'HEAD' && status === 403));
      if (attempt === 0 && retryable) {
        this.resigned++;
        // An expired presigned URL only needs a new URL; anything else, credentials read anew.
        const urlExpired = Boolean(this.presigned) && req.presigned && /expired/i.test(body.message ?? '');
        refresh = !urlExpired;
        this.presigned = undefined;
        continue;
      }
      throw s3Error(res, body, `s3://${req.location.bucket}/${req.location.key}`, this.endpoint.region);
    }
  }

  private async sendOnce(req: S3Request, stallTimeoutMs: number, refresh: boolean): Promise<IncomingMessage> {
    const base = objectUrl(this.endpoint, req.location, req.query);
    const headers: Record<string, string> = { 'user-agent': 'loom/0.1', ...req.headers };
    const range = headers.range;
    delete headers.range;
    let url = base;
    let sent: Record<string, string | string[] | number | undefined> = headers;
    if (this.credentials) {
      const credentials = await this.credentials(refresh ? { forceRefresh: true } : undefined);
      if (req.presigned && this.options.presignExpiresSeconds) {
        this.presigned ??= presignedUrl(base, credentials, this.endpoint.region, this.options.presignExpiresSeconds);
        url = this.presigned;
      } else {
        sent = signedHeaders(req.method, base, headers, credentials, this.endpoint.region);
      }
    }
    return this.client.request(url, {
      method: req.method,
      headers: range ? { ...sent, range } : sent,
      signal: req.signal,
      stallTimeoutMs,
    });
  }

  close(): void {
    this.client.close();
  }
}

/** A HEAD answer has no body: name its status the way S3's XML would. */
function headCode(status: number): string | undefined {
  return status === 403 ? 'AccessDenied' : status === 404 ? 'NotFound' : undefined;
}
