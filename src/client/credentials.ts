/**
 * Where credentials come from: docker's `config.json` (`auths`, `credHelpers`, `credsStore`, honouring
 * DOCKER_CONFIG) and Berth's own login store (`$XDG_CONFIG_HOME/berth/auth.json`, mode 0600, written
 * atomically). `defaultCredentials()` chains them; the CLI's `login`/`logout` use `saveLogin`/`removeLogin`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { CredentialResolver, Credentials } from './auth.ts';
import { AuthError } from './errors.ts';

export interface CredentialSourceOptions {
  /** Environment (default `process.env`): HOME, DOCKER_CONFIG, XDG_CONFIG_HOME, PATH. */
  env?: NodeJS.ProcessEnv;
  /** docker config file (default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). */
  dockerConfig?: string;
  /** Berth login store (default {@link berthAuthPath}). */
  berthStore?: string;
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** `host[:port]` of a config key such as `https://host:5000/v1/` or `host:5000`. */
export function normalizeHost(key: string): string {
  let s = key.trim().toLowerCase();
  s = s.replace(/^[a-z]+:\/\//, '');
  s = s.split('/')[0]!;
  return DOCKER_HUB.includes(s) ? 'docker.io' : s;
}

function homeOf(env: NodeJS.ProcessEnv): string {
  return env.HOME || homedir();
}

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(homeOf(env), '.docker', 'config.json');
}

/** `$XDG_CONFIG_HOME/berth/auth.json`, else `~/.config/berth/auth.json`. */
export function berthAuthPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CONFIG_HOME || join(homeOf(env), '.config'), 'berth', 'auth.json');
}

function readJson<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new AuthError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

function findKey<T>(map: Record<string, T> | undefined, host: string): T | undefined {
  if (!map) return undefined;
  const want = normalizeHost(host);
  if (map[host] !== undefined) return map[host];
  for (const [k, v] of Object.entries(map)) if (normalizeHost(k) === want) return v;
  return undefined;
}

/**
 * Runs `docker-credential-<helper> get` with the host on stdin (the docker credential-helper protocol).
 * Returns undefined when the helper has no credentials for the host.
 */
export function runCredentialHelper(helper: string, host: string, env: NodeJS.ProcessEnv = process.env): Promise<Credentials | undefined> {
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) return Promise.reject(new AuthError(`invalid credential helper name ${JSON.stringify(helper)}`));
  return new Promise((ok, fail) => {
    const p = spawn(`docker-credential-${helper}`, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'], timeout: 30_000 });
    const out: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => out.push(d));
    p.once('error', (e) => fail(new AuthError(`credential helper docker-credential-${helper}: ${e.message}`, { cause: e })));
    p.once('close', (code) => {
      const text = Buffer.concat(out).toString('utf8').trim();
      if (code !== 0) {
        if (/credentials not found/i.test(text)) return ok(undefined);
        return fail(new AuthError(`credential helper docker-credential-${helper} exited with ${code}: ${text.slice(0, 200)}`));
      }
      try {
        const j = JSON.parse(text) as { Username?: string; Secret?: string };
        if (!j.Secret) return ok(undefined);
        ok(j.Username === '<token>' ? { identityToken: j.Secret } : { username: j.Username ?? '', password: j.Secret });
      } catch {
        fail(new AuthError(`credential helper docker-credential-${helper} printed invalid JSON`));
      }
    });
    p.stdin.on('error', () => undefined);
    p.stdin.end(host);
  });
}

/** Credentials for `host` from docker's config.json: credHelpers[host], then credsStore, then auths[host]. */
export async function dockerCredentials(host: string, o: CredentialSourceOptions = {}): Promise<Credentials | undefined> {
  const env = o.env ?? process.env;
  const cfg = readJson<DockerConfig>(o.dockerConfig ?? dockerConfigPath(env));
  if (!cfg) return undefined;
  const helper = findKey(cfg.credHelpers, host);
  if (helper) return runCredentialHelper(helper, helperHost(host, cfg.credHelpers), env);
  const entry = findKey(cfg.auths, host);
  if (cfg.credsStore) {
    const c = await runCredentialHelper(cfg.credsStore, helperHost(host, cfg.auths), env);
    if (c) return c;
  }
  if (!entry) return undefined;
  if (entry.identitytoken) return { identityToken: entry.identitytoken, ...(entry.username ? { username: entry.username } : {}) };
  if (entry.registrytoken) return { registryToken: entry.registrytoken };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = decoded.indexOf(':');
    if (i < 0) throw new AuthError(`docker config: auths entry for ${host} is not base64 of user:password`);
    return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/** The server name a helper was given at login: the config's own key for the host (docker passes it verbatim). */
function helperHost(host: string, map: Record<string, unknown> | undefined): string {
  if (map) for (const k of Object.keys(map)) if (normalizeHost(k) === normalizeHost(host)) return k;
  return host;
}

interface BerthStore {
  auths: Record<string, { username?: string; password?: string; identityToken?: string }>;
}

/** Credentials saved by {@link saveLogin} for `host`. */
export function berthCredentials(host: string, o: CredentialSourceOptions = {}): Credentials | undefined {
  const store = readJson<BerthStore>(o.berthStore ?? berthAuthPath(o.env));
  const e = findKey(store?.auths, host);
  if (!e) return undefined;
  if (e.identityToken) return { identityToken: e.identityToken, ...(e.username ? { username: e.username } : {}) };
  if (e.username !== undefined && e.password !== undefined) return { username: e.username, password: e.password };
  return undefined;
}

function writeAtomic(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/**
 * Saves a login for `host` in the Berth login store (creating it with mode 0600; replaced atomically).
 * Prefer an `identityToken` (a refresh token) over a password when the registry gave one.
 */
export function saveLogin(host: string, creds: { username: string; password: string } | { identityToken: string; username?: string }, o: CredentialSourceOptions = {}): string {
  const path = o.berthStore ?? berthAuthPath(o.env);
  const store = readJson<BerthStore>(path) ?? { auths: {} };
  store.auths ??= {};
  const key = normalizeHost(host);
  for (const k of Object.keys(store.auths)) if (normalizeHost(k) === key) delete store.auths[k];
  store.auths[key] = 'identityToken' in creds ? { ...(creds.username ? { username: creds.username } : {}), identityToken: creds.identityToken } : { username: creds.username, password: creds.password };
  writeAtomic(path, `${JSON.stringify(store, null, 2)}\n`);
  return path;
}

/** Removes the login for `host`; returns whether there was one. The file is removed when it becomes empty. */
export function removeLogin(host: string, o: CredentialSourceOptions = {}): boolean {
  const path = o.berthStore ?? berthAuthPath(o.env);
  const store = readJson<BerthStore>(path);
  if (!store?.auths) return false;
  const key = normalizeHost(host);
  const keys = Object.keys(store.auths).filter((k) => normalizeHost(k) === key);
  if (keys.length === 0) return false;
  for (const k of keys) delete store.auths[k];
  if (Object.keys(store.auths).length === 0) rmSync(path, { force: true });
  else writeAtomic(path, `${JSON.stringify(store, null, 2)}\n`);
  return true;
}

/** Resolution order: the Berth login store, then docker's config.json (credHelpers, credsStore, auths). */
export function defaultCredentials(o: CredentialSourceOptions = {}): CredentialResolver {
  return async (host) => berthCredentials(host, o) ?? (await dockerCredentials(host, o));
}

/** Fixed credentials for every host (e.g. from command-line flags). */
export function staticCredentials(creds: Credentials | undefined): CredentialResolver {
  return () => Promise.resolve(creds);
}
