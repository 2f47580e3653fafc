/** Runs the real `berth` CLI from source (`node --import tsx src/cli/main.ts ...`) as a child process. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../helpers/servers.ts';

export interface CliResult {
  code: number | null;
  /** stdout exactly as written. */
  bytes: Buffer;
  stdout: string;
  stderr: string;
}

export function berth(args: string[], o: { env?: NodeJS.ProcessEnv; input?: string | Buffer } = {}): Promise<CliResult> {
  return new Promise((ok, fail) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), ...args], { cwd: PROJECT_ROOT, env: { ...process.env, BERTH_DEBUG: '', ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.once('error', fail);
    p.once('close', (code) => {
      clearTimeout(timer);
      const bytes = Buffer.concat(out);
      ok({ code, bytes, stdout: bytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    p.stdin.end(o.input ?? '');
  });
}

/** Runs and requires exit status 0, returning the result (the assertion message carries stderr). */
export async function berthOk(args: string[], o: Parameters<typeof berth>[1] = {}): Promise<CliResult> {
  const r = await berth(args, o);
  if (r.code !== 0) throw new Error(`berth ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r;
}

/** Parses the stdout of a `--json` run. */
export async function berthJson<T = Record<string, unknown>>(args: string[], o: Parameters<typeof berth>[1] = {}): Promise<T> {
  return JSON.parse((await berthOk([...args, '--json'], o)).stdout) as T;
}
