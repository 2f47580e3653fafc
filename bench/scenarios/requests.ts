/**
 * Scenarios 5–6: request rates at `--connections` connections. Manifest GET and HEAD by tag and by digest,
 * and GET of a 4 KiB blob; wrk for GET, hey for HEAD. Reports req/s, p50 and p99 latency.
 */
import { ACCEPT_HEADER } from '../client.ts';
import { alternate, errorText, loadRows, recordLoad, type Ctx, type Target } from '../context.ts';
import { APP_REPO, OCI_MANIFEST } from '../fixtures.ts';
import { LIMIT } from '../limits.ts';
import { load } from '../load.ts';

/** Pushes the config, four 4 KiB layers and the manifest (tag `latest`) into bench/app on both servers. */
export async function setupApp(ctx: Ctx): Promise<void> {
  const fx = ctx.fixtures;
  for (const t of ctx.targets) {
    for (const b of [fx.config, ...fx.layers]) await t.client.pushMonolithic(APP_REPO, b);
    await t.client.putManifest(APP_REPO, 'latest', fx.manifest.data, OCI_MANIFEST);
    const got = await t.client.getManifest(APP_REPO, fx.manifest.digest);
    if (!got.body.equals(fx.manifest.data)) throw new Error(`${t.label}: manifest read back differs from what was pushed`);
  }
}

interface LoadCase {
  id: string;
  scenario: string;
  method: 'GET' | 'HEAD';
  path: string;
  limitId?: string;
  limitLabel: string;
  /** Measures the ceiling once, inside the alternation. */
  ceiling?: () => Promise<void>;
  headers: Record<string, string>;
}

async function runCases(ctx: Ctx, group: string, cases: LoadCase[]): Promise<void> {
  const { connections, duration, warmup, runs } = ctx.opts;
  for (const c of cases) {
    const rows = loadRows(ctx, group, c.id, c.scenario, c.limitId, c.limitLabel);
    ctx.log(`${c.scenario}: ${runs} × ${duration} s per server`);
    const url = (t: Target): string => `${t.running.url}${c.path}`;
    if (warmup > 0) {
      for (const t of ctx.targets) {
        try {
          await load(url(t), c.method, { connections, duration: warmup, headers: c.headers });
        } catch (e) {
          ctx.log(`  warm-up on ${t.label} failed: ${errorText(e)}`);
        }
      }
    }
    await alternate(ctx, runs, async (t) => {
      try {
        recordLoad(rows, t, await load(url(t), c.method, { connections, duration, headers: c.headers }));
      } catch (e) {
        rows.rps.errors[t.id].push(errorText(e));
        ctx.log(`  ${c.scenario} on ${t.label} failed: ${errorText(e)}`);
      }
    }, c.ceiling);
  }
}

export async function manifestRequests(ctx: Ctx): Promise<void> {
  const d = ctx.fixtures.manifest.digest;
  const c = ctx.opts.connections;
  const accept = { Accept: ACCEPT_HEADER };
  const mk = (method: 'GET' | 'HEAD', by: 'tag' | 'digest'): LoadCase => ({
    id: `manifest-${method.toLowerCase()}-${by}`,
    scenario: `manifest ${method} by ${by} (${c} conns, ${method === 'GET' ? 'wrk' : 'hey'})`,
    method,
    path: `/v2/${APP_REPO}/manifests/${by === 'tag' ? 'latest' : d}`,
    limitId: method === 'GET' ? LIMIT.nginxManifestGet : LIMIT.nginxManifestHead,
    limitLabel: `nginx static manifest ${method}`,
    ceiling: () => ctx.ceilings.nginxManifest(method, ctx.fixtures.manifest.size),
    headers: accept,
  });
  await runCases(ctx, 'manifest', [mk('GET', 'tag'), mk('GET', 'digest'), mk('HEAD', 'tag'), mk('HEAD', 'digest')]);
}

/** GET /v2/ at the same concurrency: the per-request cost of each server's HTTP stack alone, for calibration. */
export async function baseRequests(ctx: Ctx): Promise<void> {
  await runCases(ctx, 'base', [
    {
      id: 'base-get',
      scenario: `calibration: GET /v2/ (${ctx.opts.connections} conns, wrk)`,
      method: 'GET',
      path: '/v2/',
      limitId: LIMIT.nodeHello,
      limitLabel: 'trivial Node server',
      ceiling: () => ctx.ceilings.hello(),
      headers: {},
    },
  ]);
}

export async function blob4kRequests(ctx: Ctx): Promise<void> {
  const b = ctx.fixtures.layers[0]!;
  await runCases(ctx, 'blob4k', [
    {
      id: 'blob4k-get',
      scenario: `blob 4 KiB GET (${ctx.opts.connections} conns, wrk)`,
      method: 'GET',
      path: `/v2/${APP_REPO}/blobs/${b.digest}`,
      limitId: LIMIT.nginxBlob4k,
      limitLabel: 'nginx static 4 KiB GET',
      ceiling: () => ctx.ceilings.nginxBlob4k(),
      headers: {},
    },
  ]);
}
