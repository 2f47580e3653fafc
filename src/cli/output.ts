/**
 * Output conventions of the client commands, in one place:
 * - results go to stdout: one JSON document with `--json` (stable field names, for scripts), human text otherwise;
 * - notes and progress go to stderr, never with `--quiet` or `--json`;
 * - progress is one bar per transfer (cli-progress) when stderr is a terminal, else one plain line per finished
 *   transfer;
 * - errors are one line `berth: ...`, exit status 1 (2 for usage errors), a stack trace only with BERTH_DEBUG=1.
 * The `copy` command reuses {@link ProgressReporter} (one bar per blob, several at once).
 */
import type { Writable } from 'node:stream';
import { RegistryError } from '../client/errors.ts';
import { UsageError } from './reference.ts';

export interface OutputOptions {
  /** Machine output: one JSON document on stdout, nothing on stderr but errors. */
  json?: boolean;
  /** No notes and no progress (results and errors still print). */
  quiet?: boolean;
}

/** One transfer (a blob) of a {@link ProgressReporter}. */
export interface Transfer {
  /** Bytes done so far (absolute, not a delta; may go back when a transfer restarts). */
  update(done: number): void;
  /** The transfer ended: `outcome` is a word such as `uploaded`, `exists`, `mounted`, `downloaded`. */
  done(outcome: string, bytes?: number): void;
  /** The transfer failed (the error itself is reported by the command). */
  fail(reason: string): void;
}

/** Progress of several concurrent transfers; what `blob get/put` use and `copy` will. */
export interface ProgressReporter {
  /** Starts a transfer named `label` (e.g. a short digest) of `total` bytes (undefined: unknown). */
  transfer(label: string, total: number | undefined): Transfer;
  /** Stops drawing; bars stay on screen in their last state. Idempotent. */
  stop(): void;
}

/** `1.5 MiB`, `312 B`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** `sha256:0123456789ab` (12 hex digits), for labels. */
export function shortDigest(d: string): string {
  const i = d.indexOf(':');
  return i < 0 ? d.slice(0, 12) : `${d.slice(0, i)}:${d.slice(i + 1, i + 13)}`;
}

const silent: ProgressReporter = {
  transfer: () => ({ update: () => undefined, done: () => undefined, fail: () => undefined }),
  stop: () => undefined,
};

/** Not a terminal: one line per transfer when it ends (`<label>: uploaded 1.2 MiB in 0.4 s`). */
function linesReporter(err: Writable): ProgressReporter {
  return {
    transfer(label, total) {
      const t0 = Date.now();
      let last = 0;
      return {
        update: (n) => void (last = n),
        done: (outcome, bytes) => void err.write(`${label}: ${outcome} ${formatBytes(bytes ?? total ?? last)} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`),
        fail: () => void err.write(`${label}: failed\n`),
      };
    },
    stop: () => undefined,
  };
}

/** A terminal: cli-progress's MultiBar, one line per transfer, redrawn at most 10 times a second. */
async function barsReporter(err: Writable): Promise<ProgressReporter> {
  const { default: cliProgress } = await import('cli-progress');
  const multi = new cliProgress.MultiBar(
    {
      stream: err as NodeJS.WritableStream,
      format: ' {label} [{bar}] {percentage}% {done}/{size} {state}',
      barsize: 25,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      fps: 10,
      autopadding: true,
      formatValue: (v, _o, type) => (type === 'percentage' ? String(v).padStart(3) : String(v)),
    },
    cliProgress.Presets.shades_classic,
  );
  let stopped = false;
  return {
    transfer(label, total) {
      const size = total ?? 0;
      const bar = multi.create(Math.max(size, 1), 0, { label, done: formatBytes(0), size: total === undefined ? '?' : formatBytes(size), state: '' });
      return {
        update: (n) => bar.update(Math.min(n, Math.max(size, n)), { done: formatBytes(n) }),
        done: (outcome, bytes) => {
          const b = bytes ?? size;
          bar.setTotal(Math.max(b, 1));
          bar.update(Math.max(b, 1), { done: formatBytes(b), size: formatBytes(b), state: outcome });
        },
        fail: (reason) => bar.update({ state: `failed: ${reason}` }),
      };
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}

/** Where the client commands write. */
export class Output {
  readonly json: boolean;
  readonly quiet: boolean;

  constructor(
    o: OutputOptions,
    readonly stdout: Writable & { isTTY?: boolean } = process.stdout,
    readonly stderr: Writable & { isTTY?: boolean } = process.stderr,
  ) {
    this.json = o.json ?? false;
    this.quiet = o.quiet ?? false;
  }

  /** The command's result: `value` as indented JSON with `--json`, else `human()` (lines; a final newline is added). */
  result(value: unknown, human: () => string): void {
    if (this.json) this.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    else {
      const s = human();
      if (s) this.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
    }
  }

  /** A status line on stderr (not with `--quiet` or `--json`). */
  note(message: string): void {
    if (!this.quiet && !this.json) this.stderr.write(`${message}\n`);
  }

  /** Bars on a terminal, plain lines otherwise, nothing with `--quiet`/`--json`. */
  async progress(): Promise<ProgressReporter> {
    if (this.quiet || this.json) return silent;
    if (this.stderr.isTTY && process.env.TERM !== 'dumb') return barsReporter(this.stderr);
    return linesReporter(this.stderr);
  }
}

/** Whether an error is the user's (arguments, references): exit status 2. */
export function isUsageError(e: unknown): boolean {
  return e instanceof UsageError;
}

/** The text of a non-OCI error body, as RegistryError's message carries it after the status. */
function bodyOf(e: RegistryError): string {
  const marker = `: ${e.status} `;
  const i = e.message.indexOf(marker);
  const body = i < 0 ? '' : e.message.slice(i + marker.length);
  return body && body !== 'no error body' ? `: ${body}` : '';
}

/** `<METHOD> <url>: <CODE>: <message> (<detail>)[; ...]`, or the HTTP status when the body had no OCI errors. */
export function formatRegistryError(e: RegistryError): string {
  const what =
    e.errors.length > 0
      ? e.errors
          .map((x) => {
            const d = x.detail === undefined || x.detail === null || x.detail === '' ? '' : ` (${typeof x.detail === 'string' ? x.detail : JSON.stringify(x.detail)})`;
            return `${x.code}: ${x.message || '(no message)'}${d}`;
          })
          .join('; ')
      : `HTTP ${e.status}${bodyOf(e)}`;
  const hint = e.status === 401 ? ' (credentials refused or missing: berth login <registry>)' : '';
  return `${e.method} ${e.url}: ${what}${hint}`;
}

/** One line for stderr (without the `berth: ` prefix) and the exit status. */
export function describeError(e: unknown): { message: string; exitCode: number } {
  if (isUsageError(e)) return { message: (e as Error).message, exitCode: 2 };
  if (e instanceof RegistryError) return { message: formatRegistryError(e), exitCode: 1 };
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') return { message: e.message, exitCode: 1 };
    const cause = e.cause instanceof Error && !e.message.includes(e.cause.message) ? `: ${e.cause.message}` : '';
    return { message: `${e.message}${cause}`, exitCode: 1 };
  }
  return { message: String(e), exitCode: 1 };
}

/** Writes the error line (and the stack with BERTH_DEBUG=1) and returns the exit status. */
export function reportError(e: unknown, stderr: Writable = process.stderr): number {
  const { message, exitCode } = describeError(e);
  stderr.write(`berth: ${message}\n`);
  if (process.env.BERTH_DEBUG === '1' && e instanceof Error && e.stack) stderr.write(`${e.stack}\n`);
  return exitCode;
}
