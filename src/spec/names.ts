/** Repository-name and tag grammar from the OCI distribution-spec. */
import { OciError } from './errors.ts';

export type RepoName = string & { readonly __brand: 'RepoName' };
export type Tag = string & { readonly __brand: 'Tag' };

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** distribution limits the whole name to 255 characters. */
export const MAX_NAME_LENGTH = 255;

export function isRepoName(s: string): s is RepoName {
  if (s.length === 0 || s.length > MAX_NAME_LENGTH) return false;
  for (const c of s.split('/')) if (!COMPONENT.test(c)) return false;
  return true;
}

export function parseRepoName(s: string): RepoName {
  if (!isRepoName(s)) throw new OciError('NAME_INVALID', { name: s.slice(0, 300), reason: 'invalid repository name' });
  return s;
}

export function isTag(s: string): s is Tag {
  return TAG.test(s);
}

export function parseTag(s: string): Tag {
  if (!isTag(s)) throw new OciError('TAG_INVALID', { tag: s.slice(0, 200), reason: 'invalid tag' });
  return s;
}
