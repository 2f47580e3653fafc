/**
 * Starts real registry processes for black-box tests: Berth (from source, through tsx) and Debian's
 * docker-registry (distribution 2.8). Each listens on a loopback port and stores under a temp directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export interface RunningRegistry {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>` for docker:// references */
  host: string;
  port: number;
  /** The storage root directory (filesystem driver). */
  root: string;
  proc: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  logs(): string;
  /** Peak resident set size of the process in bytes (VmHWM), while it runs. */
  peakRss(): number;
  /** SIGTERM and wait for exit; removes the temp directory unless `keep`. */
  stop(opts?: { keep?: boolean; signal?: NodeJS.Signals }): Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

function peak(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function wrap(proc: ChildProcess, root: string, port: number, tmp: string | undefined, output: string[], cfgDir: string): RunningRegistry {
  const exited = new Promise<number | null>((ok) => proc.once('exit', (code) => ok(code)));
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    root,
    proc,
    logs: () => output.join(''),
    peakRss: () => peak(proc.pid),
    async stop(opts = {}) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(opts.signal ?? 'SIGTERM');
      const kill = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(kill);
      if (tmp && !opts.keep) rmSync(tmp, { recursive: true, force: true });
      rmSync(cfgDir, { recursive: true, force: true });
      return code;
    },
  };
}

export interface BerthOptions {
  /** Extra YAML appended to the generated config (top-level sections other than storage/http). */
  extraYaml?: string;
  /** Storage root to use (default: a fresh temp dir). */
  root?: string;
  /** Replace the whole config (then `root` is only informative). */
  configYaml?: string;
  env?: NodeJS.ProcessEnv;
  deleteEnabled?: boolean;
  readonly?: boolean;
  port?: number;
  /** Run the compiled `bin/berth.cjs` instead of the TypeScript source, as `npx berth` does: executed, so its shebang counts. */
  compiled?: boolean;
}

/** Starts Berth as a child process on a loopback port and waits for its "listening" log line. */
export async function startBerth(opts: BerthOptions = {}): Promise<RunningRegistry> {
  const tmp = opts.root ? undefined : mkdtempSync(join(tmpdir(), 'berth-test-'));
  const root = opts.root ?? join(tmp!, 'data');
  const cfgDir = mkdtempSync(join(tmpdir(), 'berth-cfg-'));
  const cfg = join(cfgDir, 'config.yml');
  const port = opts.port ?? 0;
  writeFileSync(
    cfg,
    opts.configYaml ??
      `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: ${opts.deleteEnabled ?? true}
  maintenance:
    readonly:
      enabled: ${opts.readonly ?? false}
http:
  addr: 127.0.0.1:${port}
  secret: test-secret
${opts.extraYaml ?? ''}`,
  );
  const [cmd, args]: [string, string[]] = opts.compiled
    ? [join(PROJECT_ROOT, 'bin/berth.cjs'), ['serve', cfg]]
    : [process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'serve', cfg]];
  const proc = spawn(cmd, args, { cwd: PROJECT_ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  const actualPort = await new Promise<number>((ok, fail) => {
    let buf = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      fail(new Error(`berth did not start within 30 s:\n${output.join('')}`));
    }, 30_000);
    proc.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
    proc.stdout!.on('data', (d: Buffer) => {
      const s = d.toString();
      output.push(s);
      if (output.length > 5000) output.splice(0, 2500);
      buf += s;
      const m = /"msg":"listening"[^\n]*"port":(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        buf = '';
        ok(Number(m[1]));
      } else if (buf.length > 100_000) buf = buf.slice(-10_000);
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`berth exited with ${code} before listening:\n${output.join('')}`));
    });
  });
  return wrap(proc, root, actualPort, tmp, output, cfgDir);
}

/** Starts Debian's docker-registry (distribution 2.8) on a free loopback port over `root`. */
export async function startDistribution(opts: { root?: string; deleteEnabled?: boolean } = {}): Promise<RunningRegistry> {
  const tmp = opts.root ? undefined : mkdtempSync(join(tmpdir(), 'distribution-test-'));
  const root = opts.root ?? join(tmp!, 'data');
  const cfgDir = mkdtempSync(join(tmpdir(), 'distribution-cfg-'));
  const cfg = join(cfgDir, 'config.yml');
  const port = await freePort();
  writeFileSync(
    cfg,
    `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: ${opts.deleteEnabled ?? true}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: test-secret
`,
  );
  const proc = spawn('docker-registry', ['serve', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  proc.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  proc.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`docker-registry exited: ${output.join('')}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/v2/`);
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not start: ${output.join('')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return wrap(proc, root, port, tmp, output, cfgDir);
}

export interface RunningS3 {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  bucket: string;
  /** The credentials s3rver accepts. */
  accesskey: string;
  secretkey: string;
  /** distribution's `storage.s3` section for this server (YAML, indented for `storage:`). */
  storageYaml(rootdirectory?: string): string;
  stop(): Promise<void>;
}

/** Starts an S3-protocol server (s3rver, from npm) on a loopback port with one empty bucket. */
export async function startS3(bucket = 'berth'): Promise<RunningS3> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-s3-'));
  // s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3 keeps in its legacy provider.
  const proc = spawn(process.execPath, ['--openssl-legacy-provider', join(PROJECT_ROOT, 'test/helpers/s3-server.mjs'), dir, bucket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const port = await new Promise<number>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`s3rver did not start:\n${out}`)), 30_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(Number(m[1]));
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`s3rver exited with ${code}:\n${out}`));
    });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    accesskey: 'S3RVER',
    secretkey: 'S3RVER',
    storageYaml: (rootdirectory = '') => `  s3:
    region: us-east-1
    regionendpoint: ${endpoint}
    forcepathstyle: true
    bucket: ${bucket}
    accesskey: S3RVER
    secretkey: S3RVER
    secure: false
    rootdirectory: ${rootdirectory || '""'}
`,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
