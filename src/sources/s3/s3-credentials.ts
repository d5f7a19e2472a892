// AWS credentials for signing: the SDK's own provider chain (environment, shared config and
// credentials files with profiles, SSO, web identity for Kubernetes service accounts,
// container and instance metadata), loaded only when an S3 URI is fetched. Its providers
// cache credentials and renew them before they expire; a source asks for them before
// every request, so a long download picks up rotated credentials.
import { S3AccessDeniedError } from '../../core/errors.js';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/** Resolves the current credentials; `forceRefresh` asks the chain again (after a 403). */
export type AwsCredentialProvider = (options?: { forceRefresh?: boolean }) => Promise<AwsCredentials>;

/** The AWS SDK's default chain, optionally for a named profile (else AWS_PROFILE). */
export function defaultCredentialProvider(profile?: string): AwsCredentialProvider {
  let chain: AwsCredentialProvider | undefined;
  return async (options) => {
    if (!chain) {
      const { fromNodeProviderChain } = await import('@aws-sdk/credential-providers');
      // ignoreCache: a forced refresh (after S3 refused the keys) re-reads the shared files,
      // where rotated keys land; ordinary calls still get the chain's cached credentials.
      chain = fromNodeProviderChain({ ...(profile && { profile }), ignoreCache: true });
    }
    try {
      return await chain(options);
    } catch (err) {
      throw new S3AccessDeniedError(`no AWS credentials found: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
        hint: 'set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run on a node with an instance or pod role',
      });
    }
  };
}

/** Fixed credentials (tests, or keys given by the caller). */
export function staticCredentials(credentials: AwsCredentials): AwsCredentialProvider {
  return () => Promise.resolve(credentials);
}
