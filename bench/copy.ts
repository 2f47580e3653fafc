/**
 * `npm run bench:copy`: copy throughput of `berth copy` against `skopeo copy` for the same multi-layer image, in
 * one run, alternating tool by tool: an OCI layout pushed into a registry (Berth, compiled), and pulled from it
 * back into a fresh layout. Each run targets a fresh repository (and, for pulls, a fresh directory), so no
 * tool skips anything. Reports medians and ratios, and writes bench/results/copy-latest.md.
 *
 * Flags: --runs N (default 5), --layers N (default 4), --layer-mib N (default 64), --out FILE.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { prepareBerth, startBerth } from './servers.ts';
import { PROJECT_ROOT } from './paths.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, layers: { type: 'string', default: '4' }, 'layer-mib': { type: 'string', default: '64' }, out: { type: 'string', default: join(PROJECT_ROOT, 'bench/results/copy-latest.md') } } });
const RUNS = Number(values.runs);
const LAYERS = Number(values.layers);
const LAYER = Number(values['layer-mib']) * 1024 * 1024;
const SKOPEO_BLOB_CACHES = ['/var/lib/containers/cache/blob-info-cache-v1.boltdb', join(homedir(), '.local/share/containers/cache/blob-info-cache-v1.boltdb')];
const log = (s: string): void => void process.stderr.write(`[bench:copy] ${s}\n`);

/** A layout with one image of LAYERS incompressible layers (pseudo-random, generated in 1 MiB blocks). */
async function buildLayout(dir: string): Promise<{ bytes: number }> {
  mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
  const put = (data: Buffer): { digest: string; size: number } => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(dir, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layers: Array<{ digest: string; size: number }> = [];
  for (let l = 0; l < LAYERS; l++) {
    const h = createHash('sha256');
    const tmp = join(dir, 'layer.tmp');
    const out = createWriteStream(tmp);
    let block = createHash('sha256').update(`layer-${l}`).digest();
    for (let off = 0; off < LAYER; off += 1024 * 1024) {
      const chunk = Buffer.alloc(Math.min(1024 * 1024, LAYER - off));
      for (let i = 0; i < chunk.length; i += 32) {
        block = createHash('sha256').update(block).digest();
        block.copy(chunk, i);
      }
      h.update(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
    const hex = h.digest('hex');
    renameSync(tmp, join(dir, 'blobs/sha256', hex));
    layers.push({ digest: `sha256:${hex}`, size: LAYER });
  }
  const config = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
    }),
  );
  const m = put(manifest);
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
  return { bytes: LAYERS * LAYER };
}

function run(cmd: string, args: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'bench-copy-'));
  const launch = prepareBerth('dist', log);
  const berthCli = [join(PROJECT_ROOT, 'bin/berth.cjs')];
  const registry = await startBerth(launch, 1, { parent: work });
  try {
    const src = join(work, 'src');
    log(`building a ${LAYERS} x ${LAYER / 1048576} MiB image layout`);
    const { bytes } = await buildLayout(src);
    const host = `127.0.0.1:${registry.port}`;
    const tools = {
      berth: {
        push: (repo: string): number => run(process.execPath, [...berthCli, 'copy', '--quiet', `oci:${src}:v1`, `${host}/${repo}:v1`]),
        pull: (repo: string, dir: string): number => run(process.execPath, [...berthCli, 'copy', '--quiet', `${host}/${repo}:v1`, `oci:${dir}:v1`]),
      },
      skopeo: {
        // skopeo remembers where it saw each blob (its blob-info cache) and would mount from the previous run's
        // repository instead of uploading: start it without that memory, as berth copy starts.
        push: (repo: string): number => {
          for (const f of SKOPEO_BLOB_CACHES) rmSync(f, { force: true });
          return run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${src}:v1`, `docker://${host}/${repo}:v1`]);
        },
        pull: (repo: string, dir: string): number => run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${host}/${repo}:v1`, `oci:${dir}:v1`]),
      },
    };
    const secs: Record<string, Record<'push' | 'pull', number[]>> = { berth: { push: [], pull: [] }, skopeo: { push: [], pull: [] } };
    for (let r = 0; r < RUNS; r++) {
      // The order alternates every run, so drift in the machine's load hits both tools alike.
      const order = r % 2 === 0 ? (['berth', 'skopeo'] as const) : (['skopeo', 'berth'] as const);
      for (const tool of order) {
        const repo = `copy-bench/${tool}-${r}`;
        secs[tool]!.push.push(tools[tool].push(repo));
        const dir = join(work, `pull-${tool}-${r}`);
        secs[tool]!.pull.push(tools[tool].pull(repo, dir));
        rmSync(dir, { recursive: true, force: true });
      }
      log(`run ${r + 1}/${RUNS}: berth push ${secs.berth!.push.at(-1)!.toFixed(2)} s, pull ${secs.berth!.pull.at(-1)!.toFixed(2)} s; skopeo push ${secs.skopeo!.push.at(-1)!.toFixed(2)} s, pull ${secs.skopeo!.pull.at(-1)!.toFixed(2)} s`);
    }
    const mbps = (s: number): string => (bytes / 1e6 / s).toFixed(0);
    const rows = (['push', 'pull'] as const).map((k) => {
      const b = median(secs.berth![k]);
      const s = median(secs.skopeo![k]);
      return `| ${k === 'push' ? 'layout -> registry (push)' : 'registry -> layout (pull)'} | ${s.toFixed(2)} s (${mbps(s)} MB/s) | ${b.toFixed(2)} s (${mbps(b)} MB/s) | ${(s / b).toFixed(2)}x |`;
    });
    const skopeoVersion = spawnSync('skopeo', ['--version'], { encoding: 'utf8' }).stdout.trim();
    const report = [
      `# berth copy vs skopeo copy`,
      '',
      `${new Date().toISOString()}; ${LAYERS} layers x ${LAYER / 1048576} MiB (incompressible) + config + manifest, ${(bytes / 1e6).toFixed(0)} MB; Berth (compiled, filesystem, 1 process) on loopback as the registry; ${RUNS} runs per tool, alternating; medians (whole command, process start included).`,
      `${skopeoVersion}; berth: ${launch.note}.`,
      '',
      '| copy | skopeo copy | berth copy | berth faster by |',
      '|---|---|---|---|',
      ...rows,
      '',
    ].join('\n');
    process.stdout.write(`${report}\n`);
    mkdirSync(join(PROJECT_ROOT, 'bench/results'), { recursive: true });
    writeFileSync(values.out!, report);
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
