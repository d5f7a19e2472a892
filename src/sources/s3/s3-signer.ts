// SigV4 for S3 requests through aws4 (a well-kept signer): a signed header set for each
// request, made at send time so X-Amz-Date is always fresh, or a presigned URL.
import type { OutgoingHttpHeaders } from 'node:http';
import aws4 from 'aws4';
import type { AwsCredentials } from './s3-credentials.js';

/** Headers that carry the signature for `method url` with `headers`; Range stays unsigned. */
export function signedHeaders(
  method: 'GET' | 'HEAD',
  url: URL,
  headers: Record<string, string>,
  credentials: AwsCredentials,
  region: string,
): OutgoingHttpHeaders {
  const signed = aws4.sign(
    { host: url.host, path: `${url.pathname}${url.search}`, method, headers: { ...headers }, service: 's3', region },
    credentials,
  );
  return signed.headers as OutgoingHttpHeaders;
}

/** A presigned GET URL valid for `expiresSeconds` from now. */
export function presignedUrl(url: URL, credentials: AwsCredentials, region: string, expiresSeconds: number): URL {
  const query = new URLSearchParams(url.search);
  query.set('X-Amz-Expires', String(expiresSeconds));
  const signed = aws4.sign(
    {
      host: url.host,
      path: `${url.pathname}?${query.toString()}`,
      method: 'GET',
      service: 's3',
      region,
      signQuery: true,
    },
    credentials,
  );
  return new URL(`${url.protocol}//${url.host}${signed.path ?? ''}`);
}
