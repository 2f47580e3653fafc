/**
 * Scenarios 7–8: full pagination of the catalog (after creating `--repos` repositories, each with a small
 * manifest whose config blob is mounted from bench/app) and of one repository's `--tags` tags, following
 * `Link` headers with n=`--page-size`. Creating them is timed too, as informational rows.
 */
import { alternate, measure, timed, type Ctx, type Target } from '../context.ts';
import { wrk } from '../load.ts';
import { APP_REPO, CATALOG_PREFIX, OCI_MANIFEST, TAGS_REPO, catalogRepo, tagName } from '../fixtures.ts';

/** Runs `fn(i)` for i < count with `concurrency` in flight; stops at the first error. */
async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < count) {
      const i = next++;
      try {
        await fn(i);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  if (failed !== undefined) throw failed instanceof Error ? failed : new Error(String(failed));
}

/** Creates the repositories/tags on each server (alternating first), recording the time as a setup row. */
async function setup(ctx: Ctx, id: string, scenario: string, count: number, perItem: (t: Target, i: number) => Promise<void>, before?: (t: Target) => Promise<void>): Promise<Set<string>> {
  const row = ctx.results.row(id, { group: id.replace(/-setup$/, ''), scenario, unit: 's', better: 'lower', informational: true, notes: [`${ctx.opts.setupConcurrency} requests in flight; once per server`] });
  const failed = new Set<string>();
  for (const t of ctx.targets) {
    ctx.log(`${scenario} on ${t.label}`);
    const ok = await measure(ctx, row, t, async () => {
      if (before) await before(t);
      return (await timed(() => pool(count, ctx.opts.setupConcurrency, (i) => perItem(t, i)))).seconds;
    });
    if (ok === undefined) failed.add(t.id);
  }
  return failed;
}

export async function catalog(ctx: Ctx): Promise<void> {
  const { repos, pageSize, runs } = ctx.opts;
  const fx = ctx.fixtures;
  const failed = await setup(ctx, 'catalog-setup', `setup: create ${repos.toLocaleString('en-US')} repositories (mount + manifest PUT)`, repos, async (t, i) => {
    const name = catalogRepo(i);
    await t.client.mount(name, fx.config.digest, APP_REPO);
    await t.client.putManifest(name, 'v1', fx.small.data, OCI_MANIFEST);
  });
  const row = ctx.results.row('catalog', {
    group: 'catalog',
    scenario: `catalog of ${repos.toLocaleString('en-US')} repositories, n=${pageSize} pages following Link`,
    unit: 's',
    better: 'lower',
  });
  ctx.log(`${row.scenario}: ${runs} run(s) per server`);
  const pages: Record<string, number> = {};
  await alternate(ctx, runs, async (t) => {
    if (failed.has(t.id)) return;
    await measure(ctx, row, t, async () => {
      const { seconds, value } = await timed(() => t.client.paginate(`/v2/_catalog?n=${pageSize}`, 'repositories'));
      const ours = value.items.filter((r) => r.startsWith(CATALOG_PREFIX));
      if (ours.length !== repos) throw new Error(`catalog listed ${ours.length} of ${repos} repositories`);
      if (new Set(value.items).size !== value.items.length) throw new Error('catalog listed a repository twice');
      pages[t.label] = value.pages;
      return seconds;
    });
  });
  row.notes.push(`pages: ${Object.entries(pages).map(([k, v]) => `${k} ${v}`).join(', ')}`);
}

export async function tagsList(ctx: Ctx): Promise<void> {
  const { tags, pageSize, runs } = ctx.opts;
  const fx = ctx.fixtures;
  const failed = await setup(
    ctx,
    'tags-setup',
    `setup: create ${tags.toLocaleString('en-US')} tags in one repository (manifest PUT by tag)`,
    tags,
    (t, i) => t.client.putManifest(TAGS_REPO, tagName(i), fx.small.data, OCI_MANIFEST),
    (t) => t.client.mount(TAGS_REPO, fx.config.digest, APP_REPO),
  );
  const row = ctx.results.row('tags', {
    group: 'tags',
    scenario: `tags list of ${tags.toLocaleString('en-US')} tags, n=${pageSize} pages following Link`,
    unit: 's',
    better: 'lower',
  });
  ctx.log(`${row.scenario}: ${runs} run(s) per server`);
  const pages: Record<string, string> = {};
  await alternate(ctx, runs, async (t) => {
    if (failed.has(t.id)) return;
    await measure(ctx, row, t, async () => {
      const { seconds, value } = await timed(() => t.client.paginate(`/v2/${TAGS_REPO}/tags/list?n=${pageSize}`, 'tags'));
      if (value.items.length !== tags || new Set(value.items).size !== tags) throw new Error(`tags list returned ${value.items.length} tags (${new Set(value.items).size} distinct), expected ${tags}`);
      pages[t.label] = `${value.pages}`;
      return seconds;
    });
  });
  row.notes.push(`pages: ${Object.entries(pages).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (Object.values(pages).some((p) => p === '1') && tags > pageSize) {
    row.notes.push('a single page means the server ignored n= and returned every tag at once (distribution 2.8 does not paginate tags)');
  }

  // The same work on both servers: every tag in one response, as distribution 2.8 answers whatever n= says.
  const whole = ctx.results.row('tags-whole', {
    group: 'tags',
    scenario: `tags list of ${tags.toLocaleString('en-US')} tags in one response (no n=), ${WHOLE_LISTINGS} listings in a row, per listing`,
    unit: 'ms',
    better: 'lower',
  });
  // The same listings timed from request to last byte: the server's part, without the harness parsing 10,000
  // tags of JSON (1–2 ms per listing, the same for both servers, which the row above includes).
  const fetchRow = ctx.results.row('tags-whole-fetch', {
    group: 'tags',
    scenario: `tags list of ${tags.toLocaleString('en-US')} tags in one response, request to last byte (the JSON parse excluded), per listing`,
    unit: 'ms',
    better: 'lower',
  });
  ctx.log(`${whole.scenario}: ${runs} run(s) per server, after ${WHOLE_LISTINGS} untimed listings from each`);
  // Untimed listings first: the first ones time the harness's JIT warming up on a 120 KB body, not the server.
  for (const t of ctx.targets) {
    if (failed.has(t.id)) continue;
    for (let i = 0; i < WHOLE_LISTINGS; i++) await t.client.paginate(`/v2/${TAGS_REPO}/tags/list`, 'tags');
  }
  await alternate(ctx, runs, async (t) => {
    if (failed.has(t.id)) return;
    await measure(ctx, whole, t, async () => {
      let fetchSeconds = 0;
      const { seconds, value } = await timed(async () => {
        let last = { items: [] as string[], pages: 0, fetchSeconds: 0 };
        for (let i = 0; i < WHOLE_LISTINGS; i++) {
          last = await t.client.paginate(`/v2/${TAGS_REPO}/tags/list`, 'tags');
          fetchSeconds += last.fetchSeconds;
        }
        return last;
      });
      if (value.items.length !== tags || value.pages !== 1) throw new Error(`tags list without n= returned ${value.items.length} tags in ${value.pages} pages, expected ${tags} in 1`);
      fetchRow.values[t.id].push((fetchSeconds * 1000) / WHOLE_LISTINGS);
      return (seconds * 1000) / WHOLE_LISTINGS;
    });
  });

  // The server's time per whole listing without any of the harness's own costs: `wrk` on one connection, one
  // listing after another (wrk reads each response whole and parses nothing).
  const rate = ctx.results.row('tags-whole-wrk', {
    group: 'tags',
    scenario: `tags list of ${tags.toLocaleString('en-US')} tags in one response, back to back on one connection (wrk), per listing`,
    unit: 'ms',
    better: 'lower',
  });
  await alternate(ctx, runs, async (t) => {
    if (failed.has(t.id)) return;
    await measure(ctx, rate, t, async () => {
      const r = await wrk(`${t.running.url}/v2/${TAGS_REPO}/tags/list`, { connections: 1, duration: Math.min(WHOLE_WRK_SECONDS, ctx.opts.duration) });
      if (r.errors > 0 || r.requests === 0) throw new Error(`wrk: ${r.errors} of ${r.requests} listings failed (${r.errorDetail ?? 'none completed'})`);
      return 1000 / r.rps;
    });
  });
}

/** Seconds of one-connection `wrk` per run of the whole-list rate (a 10 ms listing gives hundreds). */
const WHOLE_WRK_SECONDS = 3;

/** Whole-listing requests per measurement (one is ~10 ms: too short to time alone on a noisy machine). */
const WHOLE_LISTINGS = 10;
