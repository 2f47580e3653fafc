/**
 * `berth/client`: a typed client for OCI distribution registries (Berth, distribution, and any registry of
 * the OCI Distribution Specification). See docs/client.md.
 */
export { RegistryClient, MANIFEST_ACCEPT, nextLink } from './client.ts';
export type { ClientOptions, SendOptions, RequestBody, ManifestResult, ManifestHead, PutManifestResult, ReferrersResult } from './client.ts';
export type { BlobSource, BlobInfo, BlobDownload, GetBlobOptions, PushBlobOptions, PushBlobResult, BlobOps } from './blobs.ts';
export { parseChallenges, mergeScopes, scopeFor, basicHeader } from './auth.ts';
export type { Credentials, CredentialResolver, Challenge, AuthStats } from './auth.ts';
export {
  defaultCredentials,
  staticCredentials,
  dockerCredentials,
  berthCredentials,
  runCredentialHelper,
  saveLogin,
  removeLogin,
  dockerConfigPath,
  berthAuthPath,
  normalizeHost,
} from './credentials.ts';
export type { CredentialSourceOptions } from './credentials.ts';
export { RegistryError, DigestMismatchError, SizeMismatchError, NetworkError, AuthError, TimeoutError, redactUrl } from './errors.ts';
export type { OciErrorEntry } from './errors.ts';
export { parseRetryAfter, isRetryableStatus, isRetryableNetworkError } from './retry.ts';
export type { RetryOptions } from './retry.ts';
export { Transport, bypassesProxy } from './transport.ts';
export type { TransportOptions, TlsOptions, ProxyOptions, HttpResponse } from './transport.ts';
export { MediaType } from '../spec/media-types.ts';
export type { Descriptor } from '../spec/manifest.ts';
export type { Digest } from '../spec/digest.ts';
