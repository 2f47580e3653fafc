/**
 * Image endpoints for the copy engine (`copy.ts`): a source reads manifests and blobs, a destination writes
 * them. Local formats implement both halves over files (`oci-layout.ts`) or one half over a tarball
 * (`docker-archive.ts`); a registry endpoint is a thin adapter over `berth/client` (see the note at the end).
 *
 * Contracts every endpoint keeps:
 * - Manifest bytes are never re-serialised: the digest of a manifest is the sha256 of the bytes as stored.
 * - A destination never makes a blob visible before its size and digest were verified against the descriptor
 *   (a registry verifies on its side; local endpoints hash while streaming and rename only on a match).
 * - Streams are `node:stream` Readables consumed with `stream.pipeline`, so memory stays bounded.
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../spec/digest.ts';
import type { Descriptor } from '../spec/manifest.ts';

/** A manifest as an endpoint holds it. */
export interface ManifestData {
  /** The exact bytes; `digest` is their sha256. */
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

/** What a blob is known by: the descriptor fields the copy engine passes along. */
export interface BlobDesc {
  digest: Digest;
  size: number;
  mediaType: string;
}

/** An open blob read: `stream` yields the bytes from the requested offset to the end. */
export interface BlobRead {
  stream: Readable;
  /** The whole blob's size (not what remains after the offset). */
  size: number;
}

/** Reopens a source blob at `offset` (0 for the whole blob): what a destination calls to start or resume. */
export type BlobOpener = (offset: number) => Promise<Readable>;

/** Where a destination stores a manifest. */
export interface ManifestTarget {
  /**
   * The name to give it: a tag for registries and OCI layouts (`org.opencontainers.image.ref.name`), a
   * `name:tag` reference for docker archives (`RepoTags`). Absent for children and untagged pushes.
   */
  tag?: string;
  /**
   * True for the manifest the user asked for and for referrers: an OCI layout lists roots in `index.json`
   * (untagged when `tag` is absent), never the children of an index, which are stored as blobs only.
   */
  root: boolean;
}

export interface PutBlobOptions {
  signal?: AbortSignal;
  /** Called with the number of bytes of the blob that are now at the destination (including resumed ones). */
  onProgress?: (done: number) => void;
}

/** The reading half of an endpoint. */
export interface ImageSource {
  /** For messages: `oci:/path`, `docker-archive:/file.tar`, `host/repo`. */
  readonly name: string;
  /**
   * The manifest named by `ref`: a tag (or archive reference), a digest, or `undefined` for the endpoint's only
   * root manifest (an OCI layout with exactly one entry in `index.json`, an archive with one image).
   * Throws when it does not exist or `ref` is ambiguous. Implementations need not verify the digest; the
   * engine does.
   */
  getManifest(ref: string | undefined, signal?: AbortSignal): Promise<ManifestData>;
  /**
   * Opens a blob, reading from `offset` (default 0). Rejects when the blob does not exist. The bytes are not
   * verified here; destinations verify while writing.
   */
  openBlob(desc: BlobDesc, offset?: number, signal?: AbortSignal): Promise<BlobRead>;
  /** Every tag (or archive reference) the endpoint names; the order is the endpoint's. */
  listTags(signal?: AbortSignal): Promise<string[]>;
  /** Manifests whose `subject` is `digest` (OCI 1.1 referrers). Absent when the endpoint cannot tell. */
  referrers?(digest: Digest, signal?: AbortSignal): Promise<Descriptor[]>;
  /** Releases what the endpoint holds (file handles). */
  close?(): Promise<void>;
}

/** The writing half of an endpoint. */
export interface ImageDestination {
  readonly name: string;
  /**
   * False when the destination stores one image manifest per name (a docker archive): the engine then selects
   * one platform of an index (`platform`, or the host's).
   */
  readonly supportsIndex: boolean;
  /** The blob's size when the destination already has it, so the engine skips it; `undefined` otherwise. */
  hasBlob(digest: Digest, signal?: AbortSignal): Promise<number | undefined>;
  /**
   * Stores a blob. `open(offset)` (re)opens the source: a destination that holds a verified prefix from an
   * interrupted attempt (an upload session, a partial file) resumes with `open(prefix)`; it may call `open`
   * again after a transient failure. Verifies size and digest before the blob becomes visible; on mismatch
   * rejects and leaves nothing under the blob's name. Concurrent calls for different digests must be safe,
   * and for the same digest must not corrupt (one may simply wait for the other).
   */
  putBlob(desc: BlobDesc, open: BlobOpener, opts?: PutBlobOptions): Promise<void>;
  /**
   * Cross-repository mount (registries): true when the blob is now present without a transfer, false when the
   * destination declined (the engine then transfers). Absent when the destination has no such notion.
   */
  mountBlob?(desc: BlobDesc, fromRepo: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * Stores a manifest after every blob and child manifest it references. Returns its digest (sha256 of
   * `bytes`).
   */
  putManifest(target: ManifestTarget, bytes: Buffer, mediaType: string, signal?: AbortSignal): Promise<Digest>;
  /**
   * Makes everything written visible as one unit where the format needs it (a tarball is renamed into place)
   * and releases resources. Called once after a successful copy; endpoints that write in place may omit it.
   */
  commit?(): Promise<void>;
  /** Discards an unfinished write (removes a temporary tarball). Safe to call after `commit`. */
  abort?(): Promise<void>;
}

/** An endpoint that can be both read and written (OCI layouts, registries). */
export type ImageEndpoint = ImageSource & ImageDestination;

/*
 * The registry adapter (to be written over `src/client/` once its API settles) maps:
 * - getManifest -> client.getManifest(repo, ref) with the full Accept list; listTags -> the paginated tag list;
 *   referrers -> client.referrers(repo, digest) (the referrers API with the tag-schema fallback).
 * - openBlob(desc, offset) -> a verified streaming GET with `Range: bytes=<offset>-` when offset > 0.
 * - hasBlob -> HEAD /v2/<repo>/blobs/<digest> (Content-Length when 200), so present blobs are skipped.
 * - mountBlob -> POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<repo> first when source and
 *   destination are on the same registry (201 = mounted; 202 = declined, cancel that session and transfer).
 * - putBlob(desc, open) -> client.pushBlob(repo, open, { digest, size, ... }): monolithic for small blobs,
 *   chunked PATCHes for large ones; after a broken chunk it asks the session's Range and calls open(offset) to
 *   resume from what the registry has. The registry verifies the digest at the final PUT.
 * - putManifest -> PUT /v2/<repo>/manifests/<tag or digest> with Content-Type = mediaType; `root` is ignored.
 */
