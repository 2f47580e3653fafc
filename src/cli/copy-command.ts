/**
 * `berth copy SRC DST`: images between registries, OCI layouts (`oci:DIR[:TAG]`) and docker archives
 * (`docker-archive:FILE[:REF]`), through the copy engine (src/copy). Blobs move in parallel with a progress bar
 * each; blobs the destination has are skipped, same-registry copies mount, and an interrupted copy re-run
 * resumes (registry uploads from the acknowledged offset, layout blobs from their `.partial` file).
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { copyAllTags, copyImage, type CopyOptions, type CopyStats, type ProgressEvent } from '../copy/copy.ts';
import { openDestination, openSource, parseImageReference } from '../copy/reference.ts';
import { RegistryEndpoint, type UploadJournal } from '../copy/registry.ts';
import type { ImageDestination, ImageSource } from '../copy/transport.ts';
import type { Ctx } from './context.ts';
import { shortDigest, type Transfer } from './output.ts';
import { formatRef, parseImageRef, UsageError } from './reference.ts';

/** Upload sessions older than this are forgotten (registries purge them after a week by default). */
const JOURNAL_MAX_AGE_MS = 7 * 24 * 3600_000;

/**
 * The upload sessions of copies in progress, in `$XDG_CACHE_HOME/berth/uploads.json` (default ~/.cache): a
 * copy run again after its process was killed continues each blob where the registry stopped.
 */
function fileJournal(): UploadJournal {
  const file = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'berth', 'uploads.json');
  let entries: Record<string, { location: string; at: number }> = {};
  try {
    entries = JSON.parse(readFileSync(file, 'utf8')) as typeof entries;
  } catch {
    entries = {};
  }
  const now = Date.now();
  for (const [k, v] of Object.entries(entries)) if (!v || typeof v.location !== 'string' || now - v.at > JOURNAL_MAX_AGE_MS) delete entries[k];
  const save = (): void => {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(entries), { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      // Only resumption after a crash depends on it; the copy itself does not.
    }
  };
  return {
    get: (k) => entries[k]?.location,
    set: (k, location) => {
      entries[k] = { location, at: Date.now() };
      save();
    },
    delete: (k) => {
      if (!(k in entries)) return;
      delete entries[k];
      save();
    },
  };
}

interface Endpoint {
  source?: ImageSource;
  destination?: ImageDestination;
  /** The tag or digest within the endpoint (registries, layouts) or the archive reference. */
  ref: string | undefined;
  /** The registry and repository, for mounts within one registry. */
  registry?: { host: string; repo: string };
  label: string;
}

function open(ctx: Ctx, s: string, as: 'source' | 'destination', journal?: UploadJournal): Endpoint {
  // Layouts and archives: the copy engine's own references. Registries: the CLI's (Docker Hub defaults, plain
  // HTTP on loopback, the common flags), so they read as in every other command.
  if (s.startsWith('oci:') || s.startsWith('docker-archive:')) {
    try {
      const r = parseImageReference(s);
      if (as === 'source') return { ...openSource(r), label: s };
      const d = openDestination(r);
      return { destination: d.destination, ref: d.ref, label: s };
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const ref = parseImageRef(s.startsWith('docker://') ? s.slice('docker://'.length) : s);
  const endpoint = new RegistryEndpoint(ctx.client(ref.registry), ref.repo, as === 'destination' ? journal : undefined);
  return {
    source: endpoint,
    destination: endpoint,
    // A destination named by digest only gets an untagged push.
    ref: as === 'source' ? ref.ref : ref.tag,
    registry: { host: ref.registry, repo: ref.repo },
    label: formatRef(ref),
  };
}

export async function copyCommand(ctx: Ctx | undefined): Promise<number> {
  if (!ctx) return 0;
  const [srcArg, dstArg] = ctx.positionals as [string, string];
  const src = open(ctx, srcArg, 'source');
  const dst = open(ctx, dstArg, 'destination', fileJournal());
  if (!src.source) throw new UsageError(`${srcArg} cannot be read`);
  if (!dst.destination) throw new UsageError(`${dstArg} cannot be written`);
  const concurrency = ctx.str('concurrency');
  if (concurrency !== undefined && !/^[1-9]\d{0,2}$/.test(concurrency)) throw new UsageError(`--concurrency must be 1-999, not ${JSON.stringify(concurrency)}`);

  const progress = await ctx.out.progress();
  const transfers = new Map<string, Transfer>();
  const onProgress = (e: ProgressEvent): void => {
    let t = transfers.get(e.digest);
    if (!t) transfers.set(e.digest, (t = progress.transfer(shortDigest(e.digest), e.total)));
    if (e.phase === 'skip') t.done('exists', 0);
    else if (e.phase === 'mount') t.done('mounted', 0);
    else if (e.phase === 'done') t.done('copied', e.total);
    else t.update(e.done);
  };
  const opts: CopyOptions = {
    onProgress,
    ...(ctx.str('platform') ? { platform: ctx.str('platform')! } : {}),
    ...(ctx.flag('referrers') ? { referrers: true } : {}),
    ...(concurrency ? { concurrency: Number(concurrency) } : {}),
    // Same registry, other repository: blobs are mounted instead of moved.
    ...(src.registry && dst.registry && src.registry.host === dst.registry.host && src.registry.repo !== dst.registry.repo ? { mountFrom: src.registry.repo } : {}),
  };
  const started = Date.now();
  let stats: CopyStats & { digest?: string; tags?: Array<{ tag: string; digest: string }> };
  try {
    // --all-tags: every tag of the repository, layout or archive (a tag in SRC or DST is ignored).
    if (ctx.flag('all-tags')) {
      stats = await copyAllTags(src.source, dst.destination, opts);
    } else {
      stats = await copyImage(src.source, src.ref, dst.destination, dst.ref, opts);
    }
  } finally {
    progress.stop();
    await src.source.close?.();
  }
  const seconds = (Date.now() - started) / 1000;
  const summary = {
    source: src.label,
    destination: dst.label,
    ...(stats.digest ? { digest: stats.digest } : {}),
    ...(stats.tags ? { tags: stats.tags } : {}),
    manifests: stats.manifests,
    referrers: stats.referrers,
    blobsTransferred: stats.blobsTransferred,
    blobsSkipped: stats.blobsSkipped,
    blobsMounted: stats.blobsMounted,
    bytesTransferred: stats.bytesTransferred,
    seconds,
  };
  ctx.out.result(summary, () => {
    const what = stats.tags ? `${stats.tags.length} tags` : stats.digest!;
    const mb = stats.bytesTransferred / 1e6;
    return `Copied ${what} to ${dst.label}: ${stats.blobsTransferred} blobs transferred (${mb.toFixed(1)} MB, ${seconds > 0 ? (mb / seconds).toFixed(1) : '-'} MB/s), ${stats.blobsSkipped} skipped, ${stats.blobsMounted} mounted, ${stats.manifests} manifests, ${stats.referrers} referrers`;
  });
  return 0;
}
