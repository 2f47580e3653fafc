/**
 * The registry client commands of `berth` (login, logout, tags, catalog, inspect, manifest, blob, delete,
 * referrers, attach), built on berth/client. Loaded only when one of them runs, so `berth serve` does not pay
 * for them. Each returns the exit status; errors are reported by {@link runClientCommand} (output.ts).
 */
import { readFileSync } from 'node:fs';
import { removeLogin, saveLogin } from '../client/credentials.ts';
import { digestOf, tryParseDigest } from '../spec/digest.ts';
import { COMMON_USAGE, parseCommand, prompt, readStdin, type Ctx } from './context.ts';
import { formatInspect, inspect } from './inspect.ts';
import { reportError } from './output.ts';
import { formatRef, parseImageRef, parseRegistry, UsageError } from './reference.ts';
import { attach, blobGet, blobPut } from './blob-commands.ts';

/** `name: [usage line, description]` of every client command, for `berth <command> --help` and USAGE. */
export const CLIENT_USAGE: Record<string, string> = {
  login: 'berth login [-u USER] [--password-stdin] REGISTRY',
  logout: 'berth logout REGISTRY',
  tags: 'berth tags [--page-size N] REGISTRY/REPO',
  catalog: 'berth catalog [--page-size N] REGISTRY',
  inspect: 'berth inspect IMAGE',
  'manifest get': 'berth manifest get [--descriptor] IMAGE',
  'manifest put': 'berth manifest put [--media-type T] IMAGE [FILE|-]',
  'blob get': 'berth blob get [-o FILE] REGISTRY/REPO@DIGEST',
  'blob put': 'berth blob put REGISTRY/REPO FILE|-...',
  delete: 'berth delete [--manifest] IMAGE:TAG|IMAGE@DIGEST',
  referrers: 'berth referrers [--artifact-type T] IMAGE',
  attach: 'berth attach --artifact-type T [--annotation K=V]... IMAGE FILE[:MEDIATYPE]...',
  copy: 'berth copy [--platform OS/ARCH[/VARIANT]] [--all-tags] [--referrers] [--concurrency N] SRC DST\n  SRC, DST: [docker://]HOST/REPO[:TAG|@DIGEST], oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG|:@N]',
};

type Command = (args: string[]) => Promise<number>;

/** Parses with the usage of `name`; `--help` prints it and ends the command with status 0. */
function parse(name: string, args: string[], options: Parameters<typeof parseCommand>[1], min: number, max: number): Ctx | undefined {
  const ctx = parseCommand(args, options, { min, max, usage: CLIENT_USAGE[name]! });
  if (ctx === 'help') {
    process.stdout.write(`usage: ${CLIENT_USAGE[name]}\n${COMMON_USAGE}\n`);
    return undefined;
  }
  openContexts.push(ctx);
  return ctx;
}

async function login(args: string[]): Promise<number> {
  const ctx = parse('login', args, { username: { type: 'string', short: 'u' }, 'password-stdin': { type: 'boolean' } }, 1, 1);
  if (!ctx) return 0;
  const registry = parseRegistry(ctx.positionals[0]!);
  let username = ctx.str('username');
  if (!username) {
    if (!process.stdin.isTTY || ctx.flag('password-stdin')) throw new UsageError('login needs --username when stdin is not a terminal');
    username = (await prompt('Username: ', false)).trim();
  }
  let password: string;
  if (ctx.flag('password-stdin')) password = (await readStdin(64 * 1024)).toString('utf8').replace(/\r?\n$/, '');
  else if (process.stdin.isTTY) password = await prompt('Password: ', true);
  else throw new UsageError('login needs --password-stdin when stdin is not a terminal');
  if (!username || !password) throw new UsageError('empty user name or password');
  const client = ctx.client(registry, { credentials: { username, password }, offlineToken: true });
  const { identityToken } = await client.login();
  const file = saveLogin(client.host, identityToken ? { username, identityToken } : { username, password });
  ctx.out.result({ registry: client.host, username, file, identityToken: identityToken !== undefined }, () => `Login succeeded: ${username}@${client.host} (stored in ${file})`);
  return 0;
}

async function logout(args: string[]): Promise<number> {
  const ctx = parse('logout', args, {}, 1, 1);
  if (!ctx) return 0;
  const registry = parseRegistry(ctx.positionals[0]!);
  const host = new URL(/^https?:\/\//.test(registry) ? registry : `http://${registry}`).host;
  const removed = removeLogin(host);
  ctx.out.result({ registry: host, removed }, () => (removed ? `Removed the login for ${host}` : `Not logged in to ${host}`));
  return 0;
}

function pageSize(ctx: Ctx): number | undefined {
  const s = ctx.str('page-size');
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s) || Number(s) < 1) throw new UsageError(`--page-size must be a positive integer, not ${JSON.stringify(s)}`);
  return Number(s);
}

async function tags(args: string[]): Promise<number> {
  const ctx = parse('tags', args, { 'page-size': { type: 'string' } }, 1, 1);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!, { repoOnly: true });
  const n = pageSize(ctx);
  const out: string[] = [];
  for await (const t of ctx.client(ref.registry).tags(ref.repo, n ? { pageSize: n } : {})) out.push(t);
  ctx.out.result({ registry: ref.registry, repository: ref.repo, tags: out }, () => out.join('\n'));
  return 0;
}

async function catalog(args: string[]): Promise<number> {
  const ctx = parse('catalog', args, { 'page-size': { type: 'string' } }, 1, 1);
  if (!ctx) return 0;
  const registry = parseRegistry(ctx.positionals[0]!);
  const n = pageSize(ctx);
  const out: string[] = [];
  for await (const r of ctx.client(registry).catalog(n ? { pageSize: n } : {})) out.push(r);
  ctx.out.result({ registry, repositories: out }, () => out.join('\n'));
  return 0;
}

async function inspectCmd(args: string[]): Promise<number> {
  const ctx = parse('inspect', args, {}, 1, 1);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  const r = await inspect(ctx.client(ref.registry), ref);
  ctx.out.result(r, () => formatInspect(r));
  return 0;
}

async function manifestGet(args: string[]): Promise<number> {
  const ctx = parse('manifest get', args, { descriptor: { type: 'boolean' } }, 1, 1);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  const m = await ctx.client(ref.registry).getManifest(ref.repo, ref.ref);
  if (ctx.flag('descriptor')) {
    const d = { mediaType: m.mediaType, digest: m.digest, size: m.size };
    ctx.out.result(d, () => JSON.stringify(d));
  } else if (ctx.out.json) {
    let doc: unknown;
    try {
      doc = JSON.parse(m.bytes.toString('utf8'));
    } catch {
      throw new Error(`${formatRef(ref)}: the manifest is not JSON (use it without --json for the raw bytes)`);
    }
    ctx.out.result(doc, () => '');
  } else process.stdout.write(m.bytes);
  return 0;
}

async function manifestPut(args: string[]): Promise<number> {
  const ctx = parse('manifest put', args, { 'media-type': { type: 'string' } }, 1, 2);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  const file = ctx.positionals[1] ?? '-';
  const bytes = file === '-' ? await readStdin(4 * 1024 * 1024) : readFileSync(file);
  let doc: { mediaType?: unknown; manifests?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch (e) {
    throw new UsageError(`${file === '-' ? 'stdin' : file} is not a JSON document: ${(e as Error).message}`);
  }
  const mediaType = ctx.str('media-type') ?? (typeof doc.mediaType === 'string' ? doc.mediaType : undefined);
  if (!mediaType) throw new UsageError('the manifest has no mediaType: give --media-type');
  const algorithm = ref.digest ? tryParseDigest(ref.digest)!.algorithm : 'sha256';
  const digest = digestOf(bytes, algorithm);
  if (ref.digest && digest !== ref.digest) throw new UsageError(`the document's digest is ${digest}, not ${ref.digest}`);
  const r = await ctx.client(ref.registry).putManifest(ref.repo, ref.tag ?? digest, bytes, { mediaType });
  const result = { reference: formatRef({ ...ref, digest: r.digest }), digest: r.digest, mediaType, size: bytes.length };
  ctx.out.result(result, () => r.digest);
  return 0;
}

async function deleteCmd(args: string[]): Promise<number> {
  const ctx = parse('delete', args, { manifest: { type: 'boolean' } }, 1, 1);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  if (ref.defaulted) throw new UsageError('delete needs an explicit :TAG or @DIGEST (no default to latest)');
  const client = ctx.client(ref.registry);
  let target = ref.ref;
  if (ref.tag && (ref.digest || ctx.flag('manifest'))) {
    // The manifest a tag names, with every tag on it (what skopeo and crane delete do).
    target = ref.digest ?? (await client.getManifest(ref.repo, ref.tag)).digest;
  }
  try {
    await client.deleteManifest(ref.repo, target);
  } catch (e) {
    if (target === ref.tag && e instanceof Error && 'status' in e && [400, 405].includes((e as { status: number }).status)) {
      throw new Error(`${e.message}\n  this registry cannot delete a tag alone; --manifest deletes the manifest ${ref.tag} names, with every tag on it`, { cause: e });
    }
    throw e;
  }
  const deleted = target === ref.tag ? { tag: ref.tag } : { digest: target };
  ctx.out.result({ registry: ref.registry, repository: ref.repo, deleted }, () => `Deleted ${formatRef({ registry: ref.registry, repo: ref.repo, ...(target === ref.tag ? { tag: ref.tag } : { digest: target }) })}`);
  return 0;
}

async function referrers(args: string[]): Promise<number> {
  const ctx = parse('referrers', args, { 'artifact-type': { type: 'string' } }, 1, 1);
  if (!ctx) return 0;
  const ref = parseImageRef(ctx.positionals[0]!);
  const client = ctx.client(ref.registry);
  const digest = ref.digest ?? (await client.getManifest(ref.repo, ref.ref)).digest;
  const type = ctx.str('artifact-type');
  const r = await client.referrers(ref.repo, digest, type ? { artifactType: type } : {});
  const manifests = r.manifests.map((m) => ({ digest: m.digest, mediaType: m.mediaType, size: m.size, ...(m.artifactType ? { artifactType: m.artifactType } : {}), ...(m.annotations ? { annotations: m.annotations } : {}) }));
  ctx.out.result({ subject: formatRef({ registry: ref.registry, repo: ref.repo, digest }), source: r.source, manifests }, () => manifests.map((m) => `${m.digest}  ${m.artifactType ?? '-'}  ${m.size}`).join('\n'));
  return 0;
}

const COMMANDS: Record<string, Command> = {
  login,
  logout,
  tags,
  catalog,
  inspect: inspectCmd,
  'manifest get': manifestGet,
  'manifest put': manifestPut,
  'blob get': (a) => blobGet(parse('blob get', a, { output: { type: 'string', short: 'o' } }, 1, 1)),
  'blob put': (a) => blobPut(parse('blob put', a, {}, 2, Infinity)),
  delete: deleteCmd,
  referrers,
  attach: (a) => attach(parse('attach', a, { 'artifact-type': { type: 'string' }, annotation: { type: 'string', multiple: true, short: 'a' } }, 1, Infinity)),
  // The copy engine and its tar library load only for copy.
  copy: async (a) => {
    const ctx = parse('copy', a, { platform: { type: 'string' }, 'all-tags': { type: 'boolean' }, referrers: { type: 'boolean' }, concurrency: { type: 'string' } }, 2, 2);
    return (await import('./copy-command.ts')).copyCommand(ctx);
  },
};

/** Commands with a subcommand (`manifest get`, `blob put`). */
const GROUPS = new Set(['manifest', 'blob']);

/** Runs a client command; returns the exit status (0, 1 for failures, 2 for usage errors). */
export async function runClientCommand(cmd: string, args: string[]): Promise<number> {
  // `berth tags ... | head` closes stdout early: that is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  let name = cmd;
  let rest = args;
  if (GROUPS.has(cmd)) {
    name = `${cmd} ${args[0] ?? ''}`;
    rest = args.slice(1);
    if (!(name in COMMANDS)) return reportError(new UsageError(`unknown ${cmd} command ${JSON.stringify(args[0] ?? '')}: ${cmd} get | ${cmd} put`));
  }
  try {
    return await COMMANDS[name]!(rest);
  } catch (e) {
    return reportError(e);
  } finally {
    closeAll();
  }
}

/** Every context parse() created; their clients are closed when the command ends, so the process can exit. */
const openContexts: Ctx[] = [];

function closeAll(): void {
  for (const c of openContexts.splice(0)) c.close();
}
