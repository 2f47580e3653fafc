/**
 * Image references on the command line, as skopeo spells them:
 * - `oci:DIR[:TAG]`: an OCI image layout directory (see `oci-layout.ts` for the `:` rule);
 * - `docker-archive:FILE[:REF]`: a `docker save` tarball, REF = `name[:tag]` or `@N` when reading;
 * - `docker://HOST/REPO[:TAG|@DIGEST]`, or the same without `docker://`: a registry repository
 *   (`registry.ts`, over `berth/client`).
 */
import type { RegistryClient } from '../client/client.ts';
import { RegistryEndpoint } from './registry.ts';
import { DockerArchiveReader, DockerArchiveWriter, parseDockerArchiveReference } from './docker-archive.ts';
import { OciLayout, parseOciReference } from './oci-layout.ts';
import type { ImageDestination, ImageSource } from './transport.ts';

export type ImageReference =
  | { transport: 'oci'; dir: string; tag?: string }
  | { transport: 'docker-archive'; file: string; ref?: string }
  | { transport: 'docker'; registry: string; repository: string; tag?: string; digest?: string };

export function parseImageReference(s: string): ImageReference {
  if (s.startsWith('oci:')) return { transport: 'oci', ...parseOciReference(s.slice('oci:'.length)) };
  if (s.startsWith('docker-archive:')) return { transport: 'docker-archive', ...parseDockerArchiveReference(s.slice('docker-archive:'.length)) };
  const rest = s.startsWith('docker://') ? s.slice('docker://'.length) : s;
  const m = /^([^/]+)\/([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}))?$/.exec(rest);
  if (!m) throw new Error(`${s}: not an image reference (oci:DIR[:TAG], docker-archive:FILE[:REF], [docker://]HOST/REPO[:TAG][@DIGEST])`);
  const ref: ImageReference = { transport: 'docker', registry: m[1]!, repository: m[2]! };
  if (m[3] !== undefined) ref.tag = m[3];
  if (m[4] !== undefined) ref.digest = m[4];
  if (ref.tag === undefined && ref.digest === undefined) ref.tag = 'latest';
  return ref;
}

/** Makes (or reuses) the client for a registry host; the caller decides credentials, TLS and plain HTTP. */
export type ClientFor = (registry: string) => RegistryClient;

function registryRef(r: Extract<ImageReference, { transport: 'docker' }>): string {
  return r.digest ?? r.tag ?? 'latest';
}

/** The source endpoint and the reference within it. */
export function openSource(r: ImageReference, clientFor?: ClientFor): { source: ImageSource; ref: string | undefined } {
  if (r.transport === 'oci') return { source: new OciLayout(r.dir), ref: r.tag };
  if (r.transport === 'docker-archive') return { source: new DockerArchiveReader(r.file), ref: r.ref };
  if (!clientFor) throw new Error('registry endpoints need a client');
  return { source: new RegistryEndpoint(clientFor(r.registry), r.repository), ref: registryRef(r) };
}

/** The destination endpoint and the name to give the image there (a digest-only registry reference: none). */
export function openDestination(r: ImageReference, clientFor?: ClientFor): { destination: ImageDestination; ref: string | undefined } {
  if (r.transport === 'oci') return { destination: new OciLayout(r.dir), ref: r.tag };
  if (r.transport === 'docker-archive') {
    if (r.ref?.startsWith('@')) throw new Error('docker-archive:FILE:@N names an image to read, not one to write');
    return { destination: new DockerArchiveWriter(r.file), ref: r.ref };
  }
  if (!clientFor) throw new Error('registry endpoints need a client');
  return { destination: new RegistryEndpoint(clientFor(r.registry), r.repository), ref: r.tag };
}
