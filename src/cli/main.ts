/** The `berth` command: argument parsing and output only. */
import { parseArgs } from 'node:util';
import { fork, type ChildProcess } from 'node:child_process';
import type { Server } from 'node:net';
import { availableParallelism } from 'node:os';
import { ConfigError, loadConfig } from '../config/config.ts';
import { createLogger, loadSecret, openDriver, openRegistry } from '../server/setup.ts';

const USAGE = `usage: berth <command> [options]

commands:
  serve [config.yml]          run the registry (default: embedded config, ./data, :5000)
  config check <config.yml>   validate a configuration file without starting
  referrers rebuild [config.yml]
                              rebuild the referrers index from the stored manifests
                              (e.g. after serving storage written by distribution)
  htpasswd add <user> [--file FILE]
                              add or replace a bcrypt entry (default file ./htpasswd); the password is
                              read from stdin (prompted for without echo on a terminal)
  token-server [config.yml] [--jwks FILE]
                              run only the built-in token server of auth.token.builtin on http.addr;
                              --jwks writes its public key set for registries that verify its tokens
  version                     print the version

registry client commands (IMAGE = [docker://]HOST[:PORT]/REPO[:TAG][@DIGEST], TAG defaults to latest):
  login [-u USER] [--password-stdin] REGISTRY
                              check credentials and store them in $XDG_CONFIG_HOME/berth/auth.json
  logout REGISTRY             forget them
  tags REGISTRY/REPO          list tags (every page)
  catalog REGISTRY            list repositories (every page)
  inspect IMAGE               platforms of an index; config, layers with sizes, annotations, total size of an image
  manifest get IMAGE          the manifest's exact bytes (--json: indented; --descriptor: its descriptor)
  manifest put IMAGE [FILE|-] push a manifest (media type from the document or --media-type); prints its digest
  blob get REGISTRY/REPO@DIGEST [-o FILE]
                              download a blob, verified against its digest
  blob put REGISTRY/REPO FILE|-...
                              upload blobs in parallel (skipped when present, resumed when interrupted);
                              prints their digests
  delete IMAGE:TAG|IMAGE@DIGEST
                              delete a tag, or a manifest with every tag on it (--manifest: the one a tag names)
  referrers IMAGE [--artifact-type T]
                              artifacts whose subject is IMAGE (referrers API, or the tag schema)
  attach --artifact-type T [-a K=V]... IMAGE FILE[:MEDIATYPE]...
                              push files as an OCI artifact with IMAGE as its subject (like oras attach)
  copy [--platform OS/ARCH] [--all-tags] [--referrers] [--concurrency N] SRC DST
                              copy images between registries, oci:DIR[:TAG] layouts and
                              docker-archive:FILE[:NAME:TAG] tarballs; blobs in parallel with progress,
                              present ones skipped, same-registry ones mounted, interrupted copies resumed
  client flags: --json, -q/--quiet, --plain-http (default for localhost and 127.0.0.0/8), --insecure;
  <command> --help for each command's usage. Exit status 1 on failure, 2 on usage errors. See docs/cli.md.

The configuration path may also come from REGISTRY_CONFIGURATION_PATH; REGISTRY_* variables override keys.`;

function fail(message: string, code = 1): never {
  process.stderr.write(`berth: ${message}\n`);
  process.exit(code);
}

/** Loads the configuration or exits with status 2 and the problems. */
function configOrExit(path: string | undefined): ReturnType<typeof loadConfig> {
  try {
    return loadConfig(path);
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message, 2);
    throw e;
  }
}

/** Set in the processes the first one forks; they receive its listening socket instead of binding their own. */
const WORKER_ENV = 'BERTH_WORKER';
/** V8 flags of every serving process (the shebang of bin/berth.cjs carries the same), unless given otherwise. */
const PROCESS_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=30'];

/**
 * `berth serve`. With `http.workers` > 1 the first process serves too, and forks the others; they all accept
 * on one listening socket (the kernel spreads connections), so N processes serve on N CPUs with no idle
 * primary and no per-connection hand-off. The first process settles the shared secret and token key, restarts
 * a child that dies, and drains everyone on SIGTERM.
 */
async function serve(args: string[]): Promise<void> {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: true });
  const { config, warnings, source } = configOrExit(positionals[0]);
  const log = createLogger(config);
  const workers = config.http.workers === 0 ? availableParallelism() : config.http.workers;
  // The HTTP server is loaded only where it serves.
  const { startServer } = await import('../server/serve.ts');

  if (process.env[WORKER_ENV]) {
    // The listening socket is asked for only once this process can take it over at once (see StartOptions).
    const handle = (): Promise<Server> =>
      new Promise<Server>((ok) => {
        const onMessage = (m: unknown, h: unknown): void => {
          if (m !== 'berth:listen') return;
          process.off('message', onMessage);
          ok(h as Server);
        };
        process.on('message', onMessage);
        process.send?.('berth:ready');
      });
    const running = await startServer(config, log, { handle });
    process.send?.('berth:listening');
    drainOnSignals(log, () => running.close());
    // A worker whose first process is gone has no one to answer to.
    process.on('disconnect', () => void running.close().then(() => process.exit(0)));
    return;
  }

  for (const w of warnings) log.warn(w);
  log.info({ msg: 'configuration', config: source, workers });
  if (workers <= 1) {
    const running = await startServer(config, log);
    drainOnSignals(log, () => running.close());
    return;
  }
  // Every process must sign upload URLs (and tokens) with the same keys: settle them once, here.
  const driver = openDriver(config);
  const secret = config.http.secret ?? (await loadSecret(config, driver, log));
  // One glibc malloc arena, as bin/berth.cjs's shebang sets for the first process (glibc reads it at start).
  const env: NodeJS.ProcessEnv = { MALLOC_ARENA_MAX: '1', ...process.env, [WORKER_ENV]: '1', REGISTRY_HTTP_SECRET: secret };
  if (config.auth) {
    const m = await import('../server/auth-setup.ts');
    const key = await m.loadTokenKeyPem(config, driver, log);
    if (key) env[m.TOKEN_KEY_ENV] = process.env[m.TOKEN_KEY_ENV] = key;
  }
  const running = await startServer({ ...config, http: { ...config.http, secret } }, log);
  const children = new Set<ChildProcess>();
  let ready = 0;
  let stopping = false;
  const forkOne = (): void => {
    // A small young generation and old-space limits close to the live heap keep each process's resident
    // memory low under request bursts (bin/berth.cjs gives the first process the same flags).
    const execArgv = [...process.execArgv, ...PROCESS_FLAGS.filter((f) => !process.execArgv.some((a) => a.startsWith(f.split('=')[0]!)))];
    const child = fork(process.argv[1]!, process.argv.slice(2), { env, execArgv });
    children.add(child);
    child.on('message', (m) => {
      // Sent when the worker can take the socket over in the same tick it arrives (nothing accepted is lost).
      if (m === 'berth:ready') child.send('berth:listen', running.server);
      if (m === 'berth:listening' && ++ready === workers - 1) log.info({ msg: 'all workers listening', workers, port: running.port });
    });
    child.once('exit', (code, signal) => {
      children.delete(child);
      if (stopping) return;
      log.error({ pid: child.pid, code, signal }, 'worker died; restarting');
      setTimeout(forkOne, 200).unref();
    });
  };
  for (let i = 1; i < workers; i++) forkOne();
  drainOnSignals(log, async () => {
    stopping = true;
    const exits = [...children].map((c) => new Promise((ok) => c.once('exit', ok)));
    for (const c of children) c.kill('SIGTERM');
    await Promise.all([running.close(), ...exits]);
  });
}

/** SIGTERM/SIGINT: drain once (repeated signals are ignored; a supervisor may send several), then exit. */
function drainOnSignals(log: ReturnType<typeof createLogger>, drain: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ msg: 'draining', signal: sig });
    void drain().then(() => {
      log.info('stopped');
      log.flush();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

function configCheck(args: string[]): void {
  const file = args[0];
  if (!file) fail('config check needs a file\n' + USAGE, 2);
  try {
    const { warnings } = loadConfig(file);
    for (const w of warnings) process.stdout.write(`warning: ${w}\n`);
    process.stdout.write(`${file}: ok\n`);
  } catch (e) {
    if (e instanceof ConfigError) fail(`${file}: ${e.message}`, 1);
    throw e;
  }
}

async function referrersRebuild(args: string[]): Promise<void> {
  const r = await openRegistry(configOrExit(args[0]).config).rebuildReferrers();
  process.stdout.write(`indexed ${r.referrers} referrers in ${r.repositories} repositories\n`);
}

async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  process.stderr.write('Password: ');
  // Echo nothing while the password is typed.
  (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
  const pw = await new Promise<string>((ok) => rl.question('', ok));
  rl.close();
  process.stderr.write('\n');
  return pw;
}

async function htpasswd(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { file: { type: 'string', default: 'htpasswd' } } });
  if (positionals[0] !== 'add' || !positionals[1]) fail(`usage: berth htpasswd add <user> [--file FILE]`, 2);
  const password = await readPassword();
  if (!password) fail('empty password', 1);
  const { htpasswdSet } = await import('../auth/htpasswd.ts');
  htpasswdSet(values.file!, positionals[1], password);
  process.stdout.write(`${values.file}: ${positionals[1]} set (bcrypt)\n`);
}

async function tokenServer(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { jwks: { type: 'string' } } });
  const { config } = configOrExit(positionals[0]);
  if (config.auth?.kind !== 'token' || !config.auth.builtin) fail('token-server needs auth.token.builtin in the configuration', 2);
  const log = createLogger(config);
  const { buildAuth, loadTokenKeyPem } = await import('../server/auth-setup.ts');
  const { serveTokenEndpoint } = await import('../server/token-server.ts');
  const { tokenEndpoint, jwks } = buildAuth(config, log, await loadTokenKeyPem(config, openDriver(config), log));
  if (values.jwks) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(values.jwks, `${JSON.stringify(jwks, null, 2)}\n`);
  }
  const running = await serveTokenEndpoint(tokenEndpoint!, config.http.addr, log);
  const stop = (): void => void running.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** The registry client commands live in client-commands.ts, loaded only when one runs. */
async function clientCommand(cmd: string, args: string[]): Promise<void> {
  const { runClientCommand } = await import('./client-commands.ts');
  process.exitCode = await runClientCommand(cmd, args);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return serve(rest);
    case 'config':
      if (rest[0] === 'check') return configCheck(rest.slice(1));
      return fail(`unknown config command ${rest[0] ?? ''}\n${USAGE}`, 2);
    case 'referrers':
      // `referrers rebuild [config]` is the maintenance command; anything else lists an image's referrers.
      if (rest[0] === 'rebuild') return referrersRebuild(rest.slice(1));
      return clientCommand(cmd, rest);
    case 'login':
    case 'logout':
    case 'tags':
    case 'catalog':
    case 'inspect':
    case 'manifest':
    case 'blob':
    case 'delete':
    case 'attach':
    case 'copy':
      return clientCommand(cmd, rest);
    case 'htpasswd':
      return htpasswd(rest);
    case 'token-server':
      return tokenServer(rest);
    case 'version':
    case '--version':
      process.stdout.write('berth 0.1.0\n');
      return;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      return fail(`unknown command ${cmd}\n${USAGE}`, 2);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => fail(e instanceof Error ? e.message : String(e)));
