/**
 * Image references of the client commands: `[docker://]host[:port]/repo[:tag][@digest]`, and registry
 * arguments `host[:port]` (or `http(s)://host[:port]`). The repository, tag and digest grammars are the ones of
 * src/spec, so the CLI refuses exactly what a registry would.
 *
 * Defaults, as docker and crane do them: a first path component that is not a host (no `.`, no `:`,
 * not `localhost`) means Docker Hub (`docker.io`, served at `registry-1.docker.io`), where a one-component
 * repository gets `library/`; no tag and no digest means `latest`.
 *
 * Plain HTTP: `--plain-http` forces it; without it `localhost`, `*.localhost`, `127.0.0.0/8` and `[::1]` are
 * spoken to over plain HTTP (as crane does, and as a registry on the loopback normally is), every other
 * host over HTTPS. `--insecure` keeps HTTPS but accepts a certificate that does not verify (oras's meaning).
 */
import { isDigest } from '../spec/digest.ts';
import { isRepoName, isTag } from '../spec/names.ts';

/** A user error: bad arguments or a malformed reference. The CLI exits with status 2 and no stack trace. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Docker Hub's name in references, and the host its API answers at. */
export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_API = 'registry-1.docker.io';

export interface ImageRef {
  /** `host[:port]` as written (`docker.io` for Docker Hub). */
  registry: string;
  /** The repository name (`library/` added for a one-component Docker Hub name). */
  repo: string;
  /** The tag, when one was written (or defaulted to `latest`, see `defaulted`). */
  tag?: string;
  /** The digest, when one was written (`@sha256:...`). */
  digest?: string;
  /** What a manifest request uses: the digest when there is one, else the tag. */
  ref: string;
  /** True when no tag and no digest were written and `latest` was assumed. */
  defaulted: boolean;
}

/** Whether the first path component of a reference names a registry host. */
function looksLikeHost(s: string): boolean {
  return s.includes('.') || s.includes(':') || s === 'localhost' || s.startsWith('[');
}

/** The host part of `host[:port]` (brackets of IPv6 kept). */
function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(0, registry.indexOf(']') + 1);
  return registry.replace(/:\d+$/, '');
}

/** Whether a registry is on the loopback (spoken to over plain HTTP unless told otherwise). */
export function isLoopback(registry: string): boolean {
  const h = hostOnly(registry).toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || /^127(\.\d{1,3}){3}$/.test(h) || h === '[::1]';
}

/** The `registry` option of RegistryClient: `http://` or `https://` plus the API host. */
export function registryUrl(registry: string, o: { plainHttp?: boolean } = {}): string {
  if (/^https?:\/\//i.test(registry)) return registry;
  const host = registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
  return `${o.plainHttp || isLoopback(host) ? 'http' : 'https'}://${host}`;
}

/** `host[:port]`, optionally as an `http(s)://` URL or with `docker://`; a path or a query is refused. */
export function parseRegistry(s: string): string {
  const t = s.replace(/^docker:\/\//, '');
  const m = /^(https?:\/\/)?([^/?#@\s]+)\/?$/i.exec(t);
  if (!m || !/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(m[2]!)) throw new UsageError(`invalid registry ${JSON.stringify(s)}: expected host[:port]`);
  return m[1] ? `${m[1].toLowerCase()}${m[2]}` : m[2]!;
}

/**
 * Parses an image reference. With `requireRef: false` (a repository argument) a tag or digest is refused;
 * otherwise a missing one defaults to `latest`.
 */
export function parseImageRef(input: string, o: { repoOnly?: boolean } = {}): ImageRef {
  const s = input.replace(/^docker:\/\//, '');
  const bad = (why: string): never => {
    throw new UsageError(`invalid reference ${JSON.stringify(input)}: ${why}`);
  };
  if (!s || /\s/.test(s)) bad('empty or contains spaces');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) bad(`${JSON.stringify(digest)} is not a digest (algorithm:hex)`);
  }
  let registry: string;
  const slash = rest.indexOf('/');
  if (slash > 0 && looksLikeHost(rest.slice(0, slash))) {
    registry = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  } else {
    registry = DOCKER_HUB;
  }
  // A tag is after the last ':' that follows the last '/'.
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTag(tag)) bad(`${JSON.stringify(tag)} is not a valid tag`);
  }
  let repo = rest;
  if (registry === DOCKER_HUB && !repo.includes('/')) repo = `library/${repo}`;
  if (!isRepoName(repo)) bad(`${JSON.stringify(repo)} is not a valid repository name (lowercase letters, digits, separators)`);
  if (o.repoOnly) {
    if (tag !== undefined || digest !== undefined) bad('expected a repository without a tag or digest');
    return { registry, repo, ref: '', defaulted: false };
  }
  const defaulted = tag === undefined && digest === undefined;
  if (defaulted) tag = 'latest';
  return { registry, repo, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}), ref: digest ?? tag!, defaulted };
}

/** Writes a reference back: `registry/repo[:tag][@digest]`. */
export function formatRef(r: { registry: string; repo: string; tag?: string; digest?: string }): string {
  return `${r.registry}/${r.repo}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}
