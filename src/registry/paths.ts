/**
 * distribution's storage layout (registry/storage/paths.go), byte for byte.
 * Everything lives under `/docker/registry/v2` of the driver root.
 */
import type { Digest } from '../spec/digest.ts';
import type { RepoName, Tag } from '../spec/names.ts';

export const ROOT = '/docker/registry/v2';
export const REPOSITORIES = `${ROOT}/repositories`;

/** `sha256:abc` -> `sha256/abc` (distribution turns `+ . ;` in the algorithm into `/`). */
function algHex(d: Digest): [string, string] {
  const i = d.indexOf(':');
  return [d.slice(0, i).replace(/[+.;]/g, '/'), d.slice(i + 1)];
}

export function blobDir(d: Digest): string {
  const [alg, hex] = algHex(d);
  return `${ROOT}/blobs/${alg}/${hex.slice(0, 2)}/${hex}`;
}
export const blobData = (d: Digest): string => `${blobDir(d)}/data`;

export const repoDir = (name: RepoName): string => `${REPOSITORIES}/${name}`;

export function layerLink(name: RepoName, d: Digest): string {
  const [alg, hex] = algHex(d);
  return `${repoDir(name)}/_layers/${alg}/${hex}/link`;
}
export const manifestsDir = (name: RepoName): string => `${repoDir(name)}/_manifests`;
export function revisionDir(name: RepoName, d: Digest): string {
  const [alg, hex] = algHex(d);
  return `${manifestsDir(name)}/revisions/${alg}/${hex}`;
}
export const revisionLink = (name: RepoName, d: Digest): string => `${revisionDir(name, d)}/link`;
export const revisionsRoot = (name: RepoName): string => `${manifestsDir(name)}/revisions`;
export const tagsDir = (name: RepoName): string => `${manifestsDir(name)}/tags`;
export const tagDir = (name: RepoName, tag: Tag): string => `${tagsDir(name)}/${tag}`;
export const tagCurrentLink = (name: RepoName, tag: Tag): string => `${tagDir(name, tag)}/current/link`;
export function tagIndexLink(name: RepoName, tag: Tag, d: Digest): string {
  const [alg, hex] = algHex(d);
  return `${tagDir(name, tag)}/index/${alg}/${hex}/link`;
}

export const uploadsDir = (name: RepoName): string => `${repoDir(name)}/_uploads`;
export const uploadDir = (name: RepoName, id: string): string => `${uploadsDir(name)}/${id}`;
export const uploadData = (name: RepoName, id: string): string => `${uploadDir(name, id)}/data`;
export const uploadStartedAt = (name: RepoName, id: string): string => `${uploadDir(name, id)}/startedat`;

/**
 * Berth's referrer index (distribution has none): `_referrers/<alg>/<subject hex>/<alg>/<referrer hex>/link`.
 * `_`-prefixed, so distribution's catalog and GC ignore it; rebuildable from the manifests.
 */
export function referrersDir(name: RepoName, subject: Digest): string {
  const [alg, hex] = algHex(subject);
  return `${repoDir(name)}/_referrers/${alg}/${hex}`;
}
export function referrerLink(name: RepoName, subject: Digest, referrer: Digest): string {
  const [alg, hex] = algHex(referrer);
  return `${referrersDir(name, subject)}/${alg}/${hex}/link`;
}
