// Where S3 requests go: region and endpoint from options, then the AWS environment variables
// (AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL, AWS_REGION over AWS_DEFAULT_REGION), and how a
// bucket is addressed (virtual-hosted on AWS, path-style on a custom endpoint).
import { InvalidUrlError, UsageError } from '../../core/errors.js';
import { encodeKey, type S3Location } from './s3-uri.js';

export type S3Addressing = 'path' | 'virtual';

export interface S3EndpointOptions {
  /** Default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1. */
  region?: string;
  /** Base URL of an S3-compatible store. Default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS. */
  endpoint?: string;
  /** Default: virtual-hosted on AWS (path-style for bucket names with dots), path-style elsewhere. */
  addressing?: S3Addressing;
  /** Environment to read (tests); default process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface S3Endpoint {
  region: string;
  /** undefined = AWS's own endpoint for the region. */
  endpoint: URL | undefined;
  addressing: S3Addressing | undefined;
}

export function resolveS3Endpoint(options: S3EndpointOptions = {}): S3Endpoint {
  const env = options.env ?? process.env;
  const region = options.region ?? (env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1');
  if (!/^[a-z0-9-]+$/.test(region)) throw new UsageError(`invalid AWS region "${region}"`);
  const raw = options.endpoint ?? (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined);
  let endpoint: URL | undefined;
  if (raw) {
    try {
      endpoint = new URL(raw);
    } catch {
      throw new InvalidUrlError(`S3 endpoint "${raw}" is not a valid URL`, {
        hint: 'give AWS_ENDPOINT_URL_S3 as http(s)://host[:port]',
      });
    }
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
      throw new InvalidUrlError(`S3 endpoint "${raw}" must be http:// or https://`);
    }
  }
  return { region, endpoint, addressing: options.addressing };
}

/** The URL of an object (or of the bucket, with key '') under this endpoint. */
export function objectUrl(where: S3Endpoint, location: S3Location, query?: URLSearchParams): URL {
  const path = location.key === '' ? '' : encodeKey(location.key);
  const base = where.endpoint ?? new URL(`https://s3.${where.region}.amazonaws.com`);
  // TLS certificates of *.s3.amazonaws.com do not cover bucket names with dots.
  const virtual = where.addressing ? where.addressing === 'virtual' : !where.endpoint && !location.bucket.includes('.');
  const prefix = base.pathname.replace(/\/$/, '');
  const url = virtual
    ? new URL(`${base.protocol}//${location.bucket}.${base.host}${prefix}/${path}`)
    : new URL(`${base.protocol}//${base.host}${prefix}/${location.bucket}${location.key === '' ? '' : `/${path}`}`);
  if (query) url.search = query.toString();
  return url;
}
