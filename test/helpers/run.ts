/** Runs real client binaries (skopeo, podman, buildah) for end-to-end tests, failing loudly with their output. */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';

export interface RunResult {
  stdout: string;
  stderr: string;
  /** stdout exactly as written. */
  bytes: Buffer;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Milliseconds before the process is killed (default 60 s). */
  timeout?: number;
  cwd?: string;
}

/** Runs `cmd args…`; rejects with the command line, exit code, stdout and stderr when it fails. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((ok, fail) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, ...opts.env }, timeout: opts.timeout ?? 60_000, maxBuffer: 64 * 1024 * 1024, cwd: opts.cwd, encoding: 'buffer' },
      (err, out, errOut) => {
        const stdout = out.toString('utf8');
        const stderr = errOut.toString('utf8');
        if (err) fail(new Error(`${cmd} ${args.join(' ')} failed (${err.code ?? err.signal ?? err.message}):\n${stdout}\n${stderr}`));
        else ok({ stdout, stderr, bytes: out });
      },
    );
  });
}

/** `skopeo` with the given arguments. */
export function skopeo(...args: string[]): Promise<RunResult> {
  return run('skopeo', args);
}

/** `skopeo copy` between plain-HTTP registries. */
export function skopeoCopy(src: string, dst: string, ...flags: string[]): Promise<RunResult> {
  return skopeo('copy', '--src-tls-verify=false', '--dest-tls-verify=false', ...flags, src, dst);
}

/**
 * sha256 of the bytes `skopeo [global…] inspect --raw --tls-verify=false [flags…] ref` prints.
 * `global` holds options that go before `inspect`, such as `--override-arch arm64`.
 */
export async function rawDigest(ref: string, flags: string[] = [], global: string[] = []): Promise<string> {
  const r = await run('skopeo', [...global, 'inspect', '--raw', '--tls-verify=false', ...flags, ref]);
  return `sha256:${createHash('sha256').update(r.bytes).digest('hex')}`;
}
