/**
 * Commands that move blobs: `blob get` (streamed, digest-verified, written to FILE.partial and renamed only
 * when verified), `blob put` (hashed first so a blob already there is skipped, then pushed resumably from the
 * file), and `attach` (files pushed as the layers of an OCI artifact whose `subject` is an image, like
 * `oras attach`). Progress per transfer goes through output.ts's ProgressReporter.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, renameSync, statSync, unlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { pipeline as pipe, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RegistryClient } from '../client/client.ts';
import type { PushBlobResult } from '../client/blobs.ts';
import { digestOf } from '../spec/digest.ts';
import { MediaType } from '../spec/media-types.ts';
import type { Ctx } from './context.ts';
import { formatBytes, shortDigest, type ProgressReporter, type Transfer } from './output.ts';
import { formatRef, parseImageRef, UsageError } from './reference.ts';

/** A pass-through that reports the bytes seen so far (starting at `start`). */
function counting(t: Transfer, start = 0): Transform {
  let n = start;
  t.update(n);
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      t.update(n);
      cb(null, chunk);
    },
  });
}

async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/** The size of a regular file, or a clear error. */
function fileSize(path: string): number {
  const st = statSync(path);
  if (!st.isFile()) throw new UsageError(`${path} is not a regular file`);
  return st.size;
}

/**
 * Pushes a file: hashed first (so the registry can answer "already there"), then sent from a source that
 * re-opens the file at any offset, so an interrupted upload resumes where the registry says it stopped.
 */
export async function pushFile(client: RegistryClient, repo: string, path: string, progress: ProgressReporter): Promise<PushBlobResult> {
  const size = fileSize(path);
  const digest = await hashFile(path);
  const t = progress.transfer(`${basename(path)} ${shortDigest(digest)}`, size);
  try {
    const open = (offset: number): Readable => pipe(createReadStream(path, { start: offset }), counting(t, offset), () => undefined);
    const r = await client.pushBlob(repo, open, { digest, size });
    t.done(r.outcome, r.size);
    return r;
  } catch (e) {
    t.fail((e as Error).message);
    throw e;
  }
}

export async function blobGet(ctx: Ctx | undefined): Promise<number> {
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  if (!ref.digest || (ref.tag && !ref.defaulted)) throw new UsageError('blob get needs REGISTRY/REPO@DIGEST');
  const output = ctx.str('output');
  const toStdout = output === undefined || output === '-';
  if (toStdout && process.stdout.isTTY) throw new UsageError('refusing to write a blob to a terminal: give -o FILE or redirect stdout');
  if (toStdout && ctx.out.json) throw new UsageError('--json needs -o FILE (stdout carries the blob)');
  const dl = await ctx.client(ref.registry).getBlob(ref.repo, ref.digest);
  const progress = await ctx.out.progress();
  const t = progress.transfer(shortDigest(ref.digest), dl.length);
  const partial = toStdout ? undefined : `${output}.partial`;
  let n = 0;
  const counter = counting({ update: (x) => t.update((n = x)), done: () => undefined, fail: () => undefined });
  try {
    if (partial) await pipeline(dl.stream, counter, createWriteStream(partial));
    else await pipeline(dl.stream, counter, process.stdout, { end: false });
    if (partial) renameSync(partial, output!);
    t.done('downloaded', n);
  } catch (e) {
    t.fail((e as Error).message);
    if (partial) {
      try {
        unlinkSync(partial);
      } catch {
        // never created
      }
    }
    throw e;
  } finally {
    progress.stop();
  }
  const result = { digest: ref.digest, size: n, ...(toStdout ? {} : { file: output }) };
  if (ctx.out.json) ctx.out.result(result, () => '');
  else if (!toStdout) ctx.out.note(`${ref.digest}: ${formatBytes(n)} written to ${output} (verified)`);
  return 0;
}

/** `blob put REPO FILE...`: the files are pushed in parallel (one progress bar each); `-` is stdin. */
export async function blobPut(ctx: Ctx | undefined): Promise<number> {
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!, { repoOnly: true });
  const files = ctx.positionals.slice(1);
  if (files.filter((f) => f === '-').length > 1) throw new UsageError('stdin (-) can be read once');
  for (const f of files) if (f !== '-') fileSize(f);
  const client = ctx.client(ref.registry);
  const progress = await ctx.out.progress();
  let results: Array<PushBlobResult & { file: string }>;
  try {
    results = await Promise.all(
      files.map(async (file) => {
        if (file !== '-') return { ...(await pushFile(client, ref.repo, file, progress)), file };
        // stdin can be read once: the digest is computed while it streams (no skip, no resume).
        const t = progress.transfer('stdin', undefined);
        const r = await client.pushBlob(ref.repo, pipe(process.stdin, counting(t), () => undefined));
        t.done(r.outcome, r.size);
        return { ...r, file };
      }),
    );
  } finally {
    progress.stop();
  }
  const blobs = results.map((r) => ({ file: r.file, reference: formatRef({ registry: ref.registry, repo: ref.repo, digest: r.digest }), digest: r.digest, size: r.size, outcome: r.outcome, resumed: r.resumed }));
  ctx.out.result({ blobs }, () => blobs.map((b) => b.digest).join('\n'));
  return 0;
}

/** `path[:media/type]`: a suffix after the last `:` is a media type when it contains a `/`. */
function fileArg(s: string): { path: string; mediaType: string } {
  const i = s.lastIndexOf(':');
  if (i > 0 && s.slice(i + 1).includes('/')) return { path: s.slice(0, i), mediaType: s.slice(i + 1) };
  return { path: s, mediaType: 'application/octet-stream' };
}

function annotationsOf(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const i = a.indexOf('=');
    if (i <= 0) throw new UsageError(`--annotation ${JSON.stringify(a)}: expected KEY=VALUE`);
    out[a.slice(0, i)] = a.slice(i + 1);
  }
  return out;
}

export async function attach(ctx: Ctx | undefined): Promise<number> {
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  const artifactType = ctx.str('artifact-type');
  if (!artifactType) throw new UsageError('attach needs --artifact-type TYPE');
  const annotations = annotationsOf(ctx.list('annotation'));
  const files = ctx.positionals.slice(1).map(fileArg);
  for (const f of files) fileSize(f.path);
  const client = ctx.client(ref.registry);
  const subject = await client.getManifest(ref.repo, ref.ref);
  const empty = Buffer.from('{}');
  const config = { mediaType: MediaType.OciEmpty, digest: digestOf(empty), size: empty.length };
  const progress = await ctx.out.progress();
  let layers: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
  try {
    await client.pushBlob(ref.repo, empty, { digest: config.digest, size: config.size });
    layers = await Promise.all(
      files.map(async (f) => {
        const r = await pushFile(client, ref.repo, f.path, progress);
        return { mediaType: f.mediaType, digest: r.digest, size: r.size, annotations: { 'org.opencontainers.image.title': basename(f.path) } };
      }),
    );
  } finally {
    progress.stop();
  }
  // No file: the empty descriptor stands in as the one layer, as the image spec recommends for artifacts.
  if (layers.length === 0) layers = [config];
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType,
    config,
    layers,
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'org.opencontainers.image.created': new Date().toISOString(), ...annotations },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = digestOf(bytes);
  const r = await client.putManifest(ref.repo, digest, bytes, { mediaType: MediaType.OciManifest });
  const result = {
    reference: formatRef({ registry: ref.registry, repo: ref.repo, digest }),
    digest,
    artifactType,
    subject: subject.digest,
    layers,
    // false: the registry has no referrers API and the `<alg>-<hex>` tag was updated instead
    referrersApi: r.subjectProcessed !== false,
  };
  ctx.out.result(result, () => digest);
  return 0;
}
