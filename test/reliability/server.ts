/** Berth in-process over a fault-injecting driver, with its error log captured for inspection. */
import { readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfigText } from '../../src/config/config.ts';
import { startServer, type RunningServer } from '../../src/server/serve.ts';
import type { FaultController } from '../helpers/faulty-driver.ts';

export interface FaultyBerth {
  running: RunningServer;
  url: string;
  /** Every record Berth logged at warn or above. */
  logs: Array<{ level: number; msg?: string; err?: { message?: string; type?: string; stack?: string } }>;
}

export async function startFaultyBerth(root: string, faults: FaultController): Promise<FaultyBerth> {
  const { config } = loadConfigText(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: reliability-secret
  draintimeout: 5s
`);
  const logs: FaultyBerth['logs'] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line) logs.push(JSON.parse(line) as FaultyBerth['logs'][number]);
      }
      cb();
    },
  });
  const log = pino({ level: 'warn' }, sink);
  const running = await startServer(config, log, { wrapDriver: (d) => faults.wrap(d) });
  return { running, url: running.url, logs };
}

/** Logged errors that were not caused by an injected fault (a genuine failure surfaced by one). */
export function genuineErrors(logs: FaultyBerth['logs']): string[] {
  return logs
    .filter((l) => l.level >= 50 && !/injected/.test(l.err?.message ?? '') && !/ENOSPC|no space left/i.test(l.err?.message ?? ''))
    .map((l) => `${l.msg}: ${l.err?.type ?? ''} ${l.err?.message ?? ''} ${l.err?.stack?.split('\n').slice(1, 4).join(' ') ?? ''}`);
}

/** Descriptors this process holds open on files under `root`. */
export function openFilesUnder(root: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(root)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Waits (up to `ms`) until no descriptor under `root` is open; returns those still open. */
export async function settleOpenFiles(root: string, ms = 15_000): Promise<string[]> {
  const until = Date.now() + ms;
  let open = openFilesUnder(root);
  while (open.length > 0 && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    open = openFilesUnder(root);
  }
  return open;
}

/** Every file under `dir` (relative paths) with its size. */
export function walkFiles(dir: string, rel = ''): Array<{ path: string; size: number }> {
  const out: Array<{ path: string; size: number }> = [];
  let names: string[];
  try {
    names = readdirSync(join(dir, rel));
  } catch {
    return out;
  }
  for (const n of names) {
    const p = rel ? `${rel}/${n}` : n;
    let st;
    try {
      st = statSync(join(dir, p));
    } catch {
      continue;
    }
    if (st.isDirectory()) out.push(...walkFiles(dir, p));
    else out.push({ path: p, size: st.size });
  }
  return out;
}

/** Records unhandled rejections and uncaught exceptions of this process while a suite runs. */
export function watchProcess(): { problems: string[]; stop: () => void } {
  const problems: string[] = [];
  const rej = (e: unknown): void => {
    problems.push(`unhandledRejection: ${(e as Error)?.stack ?? String(e)}`);
  };
  const exc = (e: Error): void => {
    problems.push(`uncaughtException: ${e.stack ?? String(e)}`);
  };
  const warn = (w: Error): void => {
    if (/file descriptor|garbage collection/i.test(w.message)) problems.push(`warning: ${w.message}`);
  };
  process.on('unhandledRejection', rej);
  process.on('uncaughtException', exc);
  process.on('warning', warn);
  return {
    problems,
    stop: () => {
      process.off('unhandledRejection', rej);
      process.off('uncaughtException', exc);
      process.off('warning', warn);
    },
  };
}
