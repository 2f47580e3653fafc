/**
 * Starts and stops the processes under test and the reference servers: Berth, Debian's docker-registry
 * (distribution 2.8), nginx serving static files, and the bare Node server ({@link ./bare-server.ts}).
 * Every process listens on a loopback port; storage lives in fresh temp directories.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { availableParallelism } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BerthRuntime } from './options.ts';
import { BENCH_DIR, PROJECT_ROOT } from './paths.ts';
import { freePort, type RunningS3 } from '../test/helpers/servers.ts';

export interface ProcessRss {
  pid: number;
  /** VmHWM: the process's peak resident set size, in bytes. */
  peak: number;
}

export interface Running {
  name: string;
  url: string;
  port: number;
  proc: ChildProcess;
  /**
   * Peak RSS of the process and of each of its descendants, while they run: the largest VmHWM read so far,
   * across {@link segmentPeak} resets.
   */
  peakRss(): ProcessRss[];
  /**
   * The summed VmHWM since the previous call (or the start), then the high-water marks reset to the current
   * RSS (`clear_refs` 5), so that each scenario's own peak shows apart from an earlier scenario's.
   */
  segmentPeak(): number;
  /**
   * Peak of the process tree's proportional set size (PSS summed over the process and its descendants,
   * sampled every 250 ms): memory shared between processes (the node binary's pages) counted once, which
   * summed VmHWM counts once per process.
   */
  peakPss(): number;
  /** The last output of the process. */
  logs(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.once('exit', () => {
  // Whole trees: nginx workers and Berth's cluster workers outlive a SIGKILLed parent.
  for (const p of live) {
    if (p.exitCode !== null || p.signalCode !== null || !p.pid) continue;
    for (const d of descendants(p.pid)) {
      try {
        process.kill(d, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    p.kill('SIGKILL');
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true, maxRetries: 3 });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    process.stderr.write(`bench: ${sig}, stopping servers\n`);
    process.exit(130);
  });
}

/** A free loopback port (shared with the test helpers). */
export { freePort };

function pss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Resets the process's VmHWM to its current RSS (where the kernel allows it; else the peak runs on). */
function resetHwm(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // exited meanwhile, or not ours to reset
  }
}

function hwm(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Pids of every descendant of `root` (from /proc/<pid>/stat). */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(e), Number(fields[1]));
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const frontier = [root];
  while (frontier.length > 0) {
    const p = frontier.pop()!;
    for (const [child, pp] of parent) {
      if (pp === p) {
        out.push(child);
        frontier.push(child);
      }
    }
  }
  return out;
}

function tail(): { push(s: string): void; text(): string } {
  const parts: string[] = [];
  let size = 0;
  return {
    push(s) {
      parts.push(s);
      size += s.length;
      while (size > 64 * 1024 && parts.length > 1) size -= parts.shift()!.length;
    },
    text: () => parts.join(''),
  };
}

function wrap(name: string, proc: ChildProcess, port: number, cleanup: string[], out: { text(): string }): Running {
  live.add(proc);
  for (const d of cleanup) tempDirs.add(d);
  const exited = new Promise<void>((ok) => {
    if (proc.exitCode !== null || proc.signalCode !== null) ok();
    else proc.once('exit', () => ok());
  });
  void exited.then(() => live.delete(proc));
  let maxPss = 0;
  // Per process: the largest VmHWM seen before a reset (segmentPeak), so the run's peak survives the resets.
  const maxHwm = new Map<number, number>();
  const tree = (): number[] => {
    const pid = proc.pid;
    if (!pid || proc.exitCode !== null) return [];
    return [pid, ...descendants(pid)];
  };
  const sampler = setInterval(() => {
    const pid = proc.pid;
    if (!pid || proc.exitCode !== null) return;
    const total = [pid, ...descendants(pid)].reduce((a, p) => a + pss(p), 0);
    if (total > maxPss) maxPss = total;
  }, 250);
  sampler.unref();
  void exited.then(() => clearInterval(sampler));
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    peakRss() {
      return tree()
        .map((p) => ({ pid: p, peak: Math.max(hwm(p), maxHwm.get(p) ?? 0) }))
        .filter((p) => p.peak > 0);
    },
    segmentPeak() {
      let total = 0;
      for (const p of tree()) {
        const h = hwm(p);
        total += h;
        if (h > (maxHwm.get(p) ?? 0)) maxHwm.set(p, h);
        resetHwm(p);
      }
      return total;
    },
    peakPss: () => maxPss,
    logs: () => out.text(),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      for (const d of cleanup) {
        rmSync(d, { recursive: true, force: true });
        tempDirs.delete(d);
      }
    },
  };
}

function spawnLogged(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { proc: ChildProcess; out: ReturnType<typeof tail> } {
  const proc = spawn(cmd, args, { cwd: opts.cwd ?? PROJECT_ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const out = tail();
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  return { proc, out };
}

/** One GET on a fresh connection; resolves with the status, or 0 when the connection fails. */
function probe(url: string): Promise<number> {
  return new Promise((ok) => {
    const req = httpRequest(url, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      res.once('end', () => ok(res.statusCode ?? 0));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => ok(0));
    req.end();
  });
}

async function waitReady(name: string, proc: ChildProcess, url: string, out: { text(): string }, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before serving:\n${out.text()}`);
    if ((await probe(url)) === 200) return;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${name} did not answer ${url} within ${timeoutMs / 1000} s:\n${out.text()}`);
    }
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------------------
// tools

const TOOLS: Array<{ cmd: string; paths: string[]; pkg: string }> = [
  { cmd: 'docker-registry', paths: ['/usr/bin/docker-registry'], pkg: 'docker-registry' },
  { cmd: 'wrk', paths: ['/usr/bin/wrk'], pkg: 'wrk' },
  { cmd: 'hey', paths: ['/usr/bin/hey'], pkg: 'hey' },
  { cmd: 'nginx', paths: ['/usr/sbin/nginx'], pkg: 'nginx-light' },
  { cmd: 'curl', paths: ['/usr/bin/curl'], pkg: 'curl' },
];

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

export const NGINX = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';

/** Installs docker-registry, wrk, hey, nginx-light and curl with apt-get when any is missing. */
export function ensureTools(noInstall: boolean, log: (s: string) => void): void {
  const missing = TOOLS.filter((t) => !t.paths.some((p) => existsSync(p)) && !onPath(t.cmd));
  if (missing.length === 0) return;
  const pkgs = missing.map((t) => t.pkg);
  if (noInstall) throw new Error(`missing tools: ${pkgs.join(', ')} (run: apt-get install -y ${pkgs.join(' ')})`);
  log(`installing ${pkgs.join(' ')} with apt-get`);
  const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const run = (args: string[]): void => {
    const [cmd, ...rest] = [...sudo, ...args];
    const r = spawnSync(cmd!, rest, { stdio: ['ignore', 'inherit', 'inherit'], env });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status ?? r.signal})`);
  };
  run(['apt-get', 'update', '-qq']);
  run(['apt-get', 'install', '-y', '-qq', ...pkgs]);
}

export function distributionVersion(): string {
  const r = spawnSync('docker-registry', ['--version'], { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').trim() || 'unknown';
}

export function toolVersions(): Record<string, string> {
  const first = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]!.trim();
  };
  return { 'docker-registry': distributionVersion(), wrk: first('wrk', ['-v']), nginx: first(NGINX, ['-v']), curl: first('curl', ['--version']) };
}

// ---------------------------------------------------------------------------------------------------------
// Berth

export interface BerthLaunch {
  runtime: 'dist' | 'tsx';
  /** The command: bin/berth.cjs run directly (its shebang's Node flags apply, as for `npx berth`), or node. */
  cmd: string;
  /** Arguments before `serve <config>`. */
  args: string[];
  note: string;
}

function newestMtime(dir: string, filter: (f: string) => boolean): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p, filter));
    else if (filter(p)) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** Decides how to run Berth: compiled dist/ (rebuilt with `npm run build` when older than src/), or tsx. */
export function prepareBerth(runtime: BerthRuntime, log: (s: string) => void): BerthLaunch {
  const tsx: BerthLaunch = { runtime: 'tsx', cmd: process.execPath, args: ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts')], note: 'from source through tsx' };
  const dist: BerthLaunch = { runtime: 'dist', cmd: join(PROJECT_ROOT, 'bin/berth.cjs'), args: [], note: 'compiled (bin/berth.cjs run as `npx berth` runs it, dist/)' };
  if (runtime === 'tsx') return tsx;
  const main = join(PROJECT_ROOT, 'dist/cli/main.js');
  const srcNewest = newestMtime(join(PROJECT_ROOT, 'src'), (f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));
  const fresh = existsSync(main) && statSync(main).mtimeMs >= srcNewest;
  if (fresh) return dist;
  log('dist/ is older than src/: npm run build');
  const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: PROJECT_ROOT, encoding: 'utf8' });
  if (r.status === 0 && existsSync(main)) return { ...dist, note: `${dist.note}, rebuilt` };
  const why = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(0, 5).join(' | ');
  if (runtime === 'dist') throw new Error(`npm run build failed: ${why}`);
  log(`npm run build failed (${why}); running Berth through tsx`);
  return { ...tsx, note: `${tsx.note} (npm run build failed)` };
}

/** The configuration shared by both registries, as far as they share keys. */
function registryYaml(root: string, port: number, o: RegistryOptions, extra = ''): string {
  // On S3 both registries stream blobs themselves (no redirect to the S3 server), so the figures are theirs.
  const storage = o.s3
    ? `${o.s3.storageYaml(`/${basename(dirname(root))}`)}  redirect:
    disable: true
`
    : `  filesystem:
    rootdirectory: ${root}
`;
  return `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
${storage}  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: bench-secret
${extra}`;
}

export interface RegistryOptions {
  /** Parent directory of the fresh temp directory holding storage and config. */
  parent: string;
  /** Store in this S3 server instead of the filesystem (each registry under its own root directory). */
  s3?: RunningS3;
}

export async function startBerth(launch: BerthLaunch, workers: number, o: RegistryOptions): Promise<Running & { root: string; workers: number }> {
  const dir = mkdtempSync(join(o.parent, 'bench-berth-'));
  const root = join(dir, 'data');
  const cfg = join(dir, 'config.yml');
  const port = await freePort();
  writeFileSync(cfg, registryYaml(root, port, o, `  workers: ${workers}\n`));
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production' };
  for (const k of Object.keys(env)) if (k.startsWith('REGISTRY_')) delete env[k];
  const { proc, out } = spawnLogged(launch.cmd, [...launch.args, 'serve', cfg], { env });
  const url = `http://127.0.0.1:${port}`;
  const n = workerCount(workers);
  try {
    await waitReady('berth', proc, `${url}/v2/`, out);
    if (n > 1) {
      // The first process serves and forks the others; wait until all of them exist and the port keeps answering.
      const deadline = Date.now() + 60_000;
      while (descendants(proc.pid!).length < n - 1) {
        if (Date.now() > deadline) throw new Error(`berth: expected ${n} workers:\n${out.text()}`);
        await sleep(100);
      }
      for (let i = 0; i < n * 4; i++) if ((await probe(`${url}/v2/`)) !== 200) await sleep(100);
      await sleep(500);
    }
  } catch (e) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { ...wrap('berth', proc, port, [dir], out), root, workers: n };
}

/** Processes serving for an `http.workers` value (0 = one per CPU). */
export function workerCount(workers: number): number {
  return workers === 0 ? availableParallelism() : workers;
}

export async function startDistribution(o: RegistryOptions): Promise<Running & { root: string }> {
  const dir = mkdtempSync(join(o.parent, 'bench-distribution-'));
  const root = join(dir, 'data');
  const cfg = join(dir, 'config.yml');
  const port = await freePort();
  writeFileSync(cfg, registryYaml(root, port, o));
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('REGISTRY_')) delete env[k];
  // aws-sdk-go v1 in distribution 2.8 panics on AWS_CA_BUNDLE with its custom transport (the endpoint is plain http).
  delete env.AWS_CA_BUNDLE;
  const { proc, out } = spawnLogged('docker-registry', ['serve', cfg], { env });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady('docker-registry', proc, `${url}/v2/`, out);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { ...wrap('distribution', proc, port, [dir], out), root };
}

// ---------------------------------------------------------------------------------------------------------
// reference servers

/** nginx (Debian) serving `files` as static files from a temp directory, two workers, no access log. */
export async function startNginx(parent: string, files: Record<string, Buffer>): Promise<Running> {
  const dir = mkdtempSync(join(parent, 'bench-nginx-'));
  const www = join(dir, 'www');
  mkdirSync(www);
  for (const [name, data] of Object.entries(files)) writeFileSync(join(www, name), data);
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  const asRoot = process.getuid?.() === 0;
  writeFileSync(
    conf,
    `daemon off;
${asRoot ? 'user root;' : ''}
worker_processes ${availableParallelism()};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 100000000;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { application/json json; application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${www};
  }
}
`,
  );
  const { proc, out } = spawnLogged(NGINX, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], { cwd: dir });
  const url = `http://127.0.0.1:${port}`;
  const first = Object.keys(files)[0] ?? '';
  try {
    await waitReady('nginx', proc, `${url}/${first}`, { text: () => `${out.text()}${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : ''}` });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return wrap('nginx', proc, port, [dir], out);
}

/** The bare Node server: hashes-and-writes request bodies (push ceiling) and streams bytes (pull ceiling). */
export async function startBare(parent: string): Promise<Running> {
  const dir = mkdtempSync(join(parent, 'bench-bare-'));
  const { proc, out } = spawnLogged(process.execPath, ['--import', 'tsx', join(BENCH_DIR, 'bare-server.ts'), dir], { env: { ...process.env, NODE_ENV: 'production' } });
  const port = await new Promise<number>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`bare server did not start:\n${out.text()}`)), 30_000);
    let buf = '';
    proc.stdout!.on('data', (d: string) => {
      buf += d;
      const m = /"port":(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        ok(Number(m[1]));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`bare server exited (${code}):\n${out.text()}`));
    });
  });
  return wrap('bare', proc, port, [dir], out);
}
