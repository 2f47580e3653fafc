/**
 * Starts a real `redis-server` (Debian's package) for tests on a free loopback port, without persistence,
 * in a temporary working directory. Stopping it kills the process and removes the directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './servers.ts';

export interface RunningRedis {
  /** `127.0.0.1:<port>`, for `redis.addr` in a config. */
  addr: string;
  host: string;
  port: number;
  proc: ChildProcess;
  /** Everything the server wrote so far. */
  logs(): string;
  /** A new client to inspect keys; closed by {@link stop} if still open. */
  client(): Redis;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

export async function startRedis(opts: { port?: number; args?: string[] } = {}): Promise<RunningRedis> {
  const port = opts.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'berth-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(opts.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const exited = new Promise<void>((ok) => proc.once('exit', () => ok()));
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      fail(new Error(`redis-server did not start within 10 s:\n${output.join('')}`));
    }, 10_000);
    const onData = (d: Buffer): void => {
      output.push(d.toString());
      if (output.join('').includes('Ready to accept connections')) {
        clearTimeout(timer);
        ok();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
    proc.once('error', (e) => {
      clearTimeout(timer);
      fail(e);
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`redis-server exited with ${code} before accepting connections:\n${output.join('')}`));
    });
  });
  const clients: Redis[] = [];
  let stopping: Promise<void> | undefined;
  return {
    addr: `127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    proc,
    logs: () => output.join(''),
    client() {
      const c = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => null });
      c.on('error', () => undefined);
      clients.push(c);
      return c;
    },
    stop() {
      stopping ??= (async () => {
        for (const c of clients) c.disconnect();
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
        const kill = setTimeout(() => proc.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(kill);
        rmSync(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}
