/**
 * What every client command shares: the common flags, argument parsing that turns mistakes into usage errors,
 * registry clients built from references (and closed at the end), and stdin/terminal helpers.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { RegistryClient, type ClientOptions } from '../client/client.ts';
import { Output } from './output.ts';
import { registryUrl, UsageError } from './reference.ts';

/** Flags every client command takes. */
export const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  'plain-http': { type: 'boolean' },
  insecure: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

export const COMMON_USAGE = `common flags: --json (machine output on stdout), -q/--quiet (no notes, no progress),
  --plain-http (HTTP instead of HTTPS; the default for localhost, 127.0.0.0/8 and [::1]),
  --insecure (HTTPS without certificate verification)`;

export type Values = Record<string, string | boolean | string[] | undefined>;

export class Ctx {
  readonly out: Output;
  private readonly clients: RegistryClient[] = [];

  constructor(
    readonly values: Values,
    readonly positionals: string[],
  ) {
    this.out = new Output({ json: values.json === true, quiet: values.quiet === true });
  }

  str(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  list(name: string): string[] {
    const v = this.values[name];
    return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  /** A client for `registry` (`host[:port]` or URL) with the common flags applied. */
  client(registry: string, extra: Partial<ClientOptions> = {}): RegistryClient {
    const c = new RegistryClient({
      registry: registryUrl(registry, { plainHttp: this.flag('plain-http') }),
      userAgent: 'berth/0.1.0',
      ...(this.flag('insecure') ? { tls: { rejectUnauthorized: false } } : {}),
      ...extra,
    });
    this.clients.push(c);
    return c;
  }

  /** Closes the clients' idle connections, so the process can exit. */
  close(): void {
    for (const c of this.clients) c.close();
  }
}

/**
 * Parses `args` with the common flags plus `options`; unknown flags and a wrong number of positionals are
 * usage errors (exit 2).
 */
export function parseCommand(args: string[], options: NonNullable<ParseArgsConfig['options']>, positionals: { min: number; max: number; usage: string }): Ctx | 'help' {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] };
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nusage: ${positionals.usage}`);
  }
  if (parsed.values.help === true) return 'help';
  const n = parsed.positionals.length;
  if (n < positionals.min || n > positionals.max) throw new UsageError(`${n < positionals.min ? 'missing arguments' : `unexpected argument ${JSON.stringify(parsed.positionals[positionals.max])}`}\nusage: ${positionals.usage}`);
  return new Ctx(parsed.values, parsed.positionals);
}

/** All of stdin, at most `max` bytes. */
export async function readStdin(max = 64 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin) {
    n += (c as Buffer).length;
    if (n > max) throw new UsageError(`stdin is larger than ${max} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Asks on the terminal (stderr), echoing nothing when `hidden`. */
export async function prompt(question: string, hidden: boolean): Promise<string> {
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  process.stderr.write(question);
  if (hidden) (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
  const answer = await new Promise<string>((ok) => rl.question('', ok));
  rl.close();
  if (hidden) process.stderr.write('\n');
  return answer;
}
