/** Scenarios 1–4: monolithic push, chunked push, pull, and concurrent pushes of large blobs (MB/s). */
import { MB, alternate, errorText, measure, settle, timed, type Ctx, type Target } from '../context.ts';
import { curlDownload } from '../load.ts';
import { PatternBlob } from '../data.ts';
import { LIMIT } from '../limits.ts';
import { formatBytes } from '../options.ts';

const BIG_REPO = 'bench/big';

function monoBlob(size: number, run: number): PatternBlob {
  return new PatternBlob(size, `mono-${run}`);
}

export async function monolithicPush(ctx: Ctx): Promise<void> {
  const { blobSize, runs } = ctx.opts;
  const row = ctx.results.row('mono', {
    group: 'mono',
    scenario: `push monolithic ${formatBytes(blobSize)} (POST + PUT with body)`,
    unit: 'MB/s',
    better: 'higher',
    limit: { id: LIMIT.barePush, label: 'bare Node push' },
  });
  ctx.log(`${row.scenario}: ${runs} run(s) per server`);
  await alternate(ctx, runs, async (t, run) => {
    const blob = monoBlob(blobSize, run);
    void blob.digest;
    await settle(ctx.opts);
    await measure(ctx, row, t, async () => blob.size / MB / (await timed(() => t.client.pushMonolithic(BIG_REPO, blob))).seconds);
  }, (run) => ctx.ceilings.push(run));
}

export async function chunkedPush(ctx: Ctx): Promise<void> {
  const { blobSize, chunkSize, runs } = ctx.opts;
  const row = ctx.results.row('chunked', {
    group: 'chunked',
    scenario: `push chunked ${formatBytes(blobSize)} in ${formatBytes(chunkSize)} PATCHes`,
    unit: 'MB/s',
    better: 'higher',
    limit: { id: LIMIT.barePush, label: 'bare Node push' },
  });
  ctx.log(`${row.scenario}: ${runs} run(s) per server`);
  await alternate(ctx, runs, async (t, run) => {
    const blob = new PatternBlob(blobSize, `chunked-${run}`);
    void blob.digest;
    await settle(ctx.opts);
    await measure(ctx, row, t, async () => blob.size / MB / (await timed(() => t.client.pushChunked('bench/chunked', blob, chunkSize))).seconds);
  }, (run) => ctx.ceilings.push(run + runs));
}

/** Pulls the first monolithic blob (pushing it first, untimed, when that scenario did not run). */
export async function pull(ctx: Ctx): Promise<void> {
  const { blobSize, runs } = ctx.opts;
  const blob = monoBlob(blobSize, 0);
  const row = ctx.results.row('pull', {
    group: 'pull',
    scenario: `pull ${formatBytes(blobSize)} (GET, read and discarded by curl)`,
    unit: 'MB/s',
    better: 'higher',
    limit: { id: LIMIT.loopback, label: 'loopback HTTP stream' },
  });
  const missing = new Set<string>();
  for (const t of ctx.targets) {
    const head = await t.client.http.request('HEAD', `/v2/${BIG_REPO}/blobs/${blob.digest}`);
    if (head.status === 200) continue;
    try {
      await t.client.pushMonolithic(BIG_REPO, blob);
    } catch (e) {
      row.errors[t.id].push(`could not push the blob to pull: ${errorText(e)}`);
      missing.add(t.id);
    }
  }
  // One untimed pull per server first: both blobs then come from the page cache, as a popular image's do,
  // instead of the first timed run reading whatever the pushes before left on disk. Pulls take about a second,
  // so two runs more than the others keep the median steadier on a machine whose bandwidth drifts.
  const url = (t: Target): string => `${t.running.url}/v2/${BIG_REPO}/blobs/${blob.digest}`;
  for (const t of ctx.targets) if (!missing.has(t.id)) await curlDownload(url(t), blob.size).catch(() => undefined);
  const pullRuns = runs > 1 ? runs + 2 : runs;
  ctx.log(`${row.scenario}: ${pullRuns} run(s) per server`);
  await alternate(ctx, pullRuns, async (t) => {
    if (missing.has(t.id)) return;
    await settle(ctx.opts);
    await measure(ctx, row, t, async () => {
      const { bytes, seconds } = await curlDownload(url(t), blob.size);
      return bytes / MB / seconds;
    });
  }, () => ctx.ceilings.loopback());
}

export async function concurrentPush(ctx: Ctx): Promise<void> {
  const { concurrency, concurrentSize, runs } = ctx.opts;
  const row = ctx.results.row('concurrent', {
    group: 'concurrent',
    scenario: `concurrent push: ${concurrency} × ${formatBytes(concurrentSize)} distinct blobs (aggregate)`,
    unit: 'MB/s',
    better: 'higher',
    limit: { id: LIMIT.barePushConcurrent, label: 'bare Node push, concurrent' },
  });
  ctx.log(`${row.scenario}: ${runs} run(s) per server`);
  await alternate(ctx, runs, async (t, run) => {
    const blobs = Array.from({ length: concurrency }, (_, k) => new PatternBlob(concurrentSize, `conc-${run}-${k}`));
    for (const b of blobs) void b.digest;
    await settle(ctx.opts);
    await measure(ctx, row, t, async () => {
      const { seconds } = await timed(() => Promise.all(blobs.map((b) => t.client.pushMonolithic('bench/concurrent', b))));
      return (concurrency * concurrentSize) / MB / seconds;
    });
  }, (run) => ctx.ceilings.concurrent(run));
}
