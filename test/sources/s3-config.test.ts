// s3:// URIs and where their requests go: the AWS environment variables in their order of
// precedence, virtual-hosted addressing on AWS and path-style on compatible stores.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidUrlError, UsageError } from '../../src/core/errors.js';
import { objectUrl, parseS3Uri, resolveS3Endpoint } from '../../src/sources/s3/index.js';

describe('s3:// URIs', () => {
  it('splits bucket and key, keeping the key verbatim', () => {
    assert.deepEqual(parseS3Uri('s3://my-bucket/a/b c%2B.bin'), { bucket: 'my-bucket', key: 'a/b c%2B.bin' });
    assert.deepEqual(parseS3Uri('s3://my-bucket'), { bucket: 'my-bucket', key: '' });
    assert.deepEqual(parseS3Uri('s3://my-bucket/prefix/'), { bucket: 'my-bucket', key: 'prefix/' });
  });

  it('refuses other schemes and invalid bucket names', () => {
    assert.throws(() => parseS3Uri('https://my-bucket/key'), InvalidUrlError);
    assert.throws(() => parseS3Uri('s3://My_Bucket/key'), InvalidUrlError);
    assert.throws(() => parseS3Uri('s3:///key'), InvalidUrlError);
  });
});

describe('S3 endpoint and region', () => {
  it('takes the region from AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1', () => {
    assert.equal(
      resolveS3Endpoint({ env: { AWS_REGION: 'eu-west-3', AWS_DEFAULT_REGION: 'x-1' } }).region,
      'eu-west-3',
    );
    assert.equal(resolveS3Endpoint({ env: { AWS_DEFAULT_REGION: 'ap-south-1' } }).region, 'ap-south-1');
    assert.equal(resolveS3Endpoint({ env: {} }).region, 'us-east-1');
    assert.equal(resolveS3Endpoint({ region: 'us-west-2', env: { AWS_REGION: 'eu-west-3' } }).region, 'us-west-2');
    assert.throws(() => resolveS3Endpoint({ region: 'eu west', env: {} }), UsageError);
  });

  it('takes the endpoint from AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL', () => {
    const env = { AWS_ENDPOINT_URL_S3: 'http://minio:9000', AWS_ENDPOINT_URL: 'http://other:1' };
    assert.equal(resolveS3Endpoint({ env }).endpoint?.href, 'http://minio:9000/');
    assert.equal(resolveS3Endpoint({ env: { AWS_ENDPOINT_URL: 'http://other:1' } }).endpoint?.href, 'http://other:1/');
    assert.throws(() => resolveS3Endpoint({ env: { AWS_ENDPOINT_URL: 'ftp://x' } }), InvalidUrlError);
  });

  it('addresses AWS buckets virtual-hosted, dotted buckets and custom endpoints path-style', () => {
    const aws = resolveS3Endpoint({ env: { AWS_REGION: 'eu-west-3' } });
    assert.equal(
      objectUrl(aws, { bucket: 'weights', key: 'llama/model 1.bin' }).href,
      'https://weights.s3.eu-west-3.amazonaws.com/llama/model%201.bin',
    );
    assert.equal(
      objectUrl(aws, { bucket: 'my.weights', key: 'a+b' }).href,
      'https://s3.eu-west-3.amazonaws.com/my.weights/a%2Bb',
    );
    const store = resolveS3Endpoint({ env: { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9000' } });
    assert.equal(objectUrl(store, { bucket: 'weights', key: 'x' }).href, 'http://127.0.0.1:9000/weights/x');
    const virtual = resolveS3Endpoint({ endpoint: 'https://store.example', addressing: 'virtual', env: {} });
    assert.equal(objectUrl(virtual, { bucket: 'weights', key: 'x' }).href, 'https://weights.store.example/x');
  });
});
