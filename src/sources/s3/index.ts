// S3 and S3-compatible stores: the public surface the engine's source factory and the CLI use.
export { s3SourceFor, S3Source } from './s3-source.js';
export { listS3Prefix, type ListS3Options, type S3ObjectEntry } from './s3-list.js';
export {
  s3ObjectChecksum,
  verifyS3Download,
  compositeSha256,
  type S3ObjectChecksum,
  type S3ChecksumCheck,
  type S3ChecksumType,
} from './s3-checksum.js';
export type { S3Options } from './s3-requester.js';
export {
  defaultCredentialProvider,
  staticCredentials,
  type AwsCredentials,
  type AwsCredentialProvider,
} from './s3-credentials.js';
export { isS3Uri, parseS3Uri, type S3Location } from './s3-uri.js';
export { resolveS3Endpoint, objectUrl, type S3Endpoint, type S3Addressing } from './s3-config.js';
export { presignedUrl } from './s3-signer.js';
