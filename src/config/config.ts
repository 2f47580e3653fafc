/**
 * Loads distribution's config.yml: YAML, then REGISTRY_* environment overrides, then validation against
 * {@link CONFIG_SCHEMA}. Unknown keys are warnings; invalid values are errors naming the key and what was
 * expected. The result is a typed, defaulted {@link BerthConfig}.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { CONFIG_SCHEMA, type Schema } from './schema.ts';
import { parseDuration } from './duration.ts';

export interface BerthConfig {
  log: { level: 'error' | 'warn' | 'info' | 'debug'; accesslog: boolean; fields: Record<string, unknown> };
  storage: {
    driver: 'filesystem' | 'inmemory' | 's3';
    /** The filesystem driver's root. */
    rootdirectory: string;
    s3?: S3Config;
    /** `storage.cache.blobdescriptor`: where blob descriptors are cached (undefined: not at all). */
    blobDescriptorCache?: 'inmemory' | 'redis';
    /** `storage.cache.blobdescriptorsize`: entries of the in-memory descriptor cache. */
    blobDescriptorCacheSize: number;
    deleteEnabled: boolean;
    redirectDisabled: boolean;
    uploadPurging: { enabled: boolean; ageMs: number; intervalMs: number; dryrun: boolean };
    readonly: boolean;
  };
  http: {
    addr: string;
    host?: string;
    prefix: string;
    secret?: string;
    relativeurls: boolean;
    drainTimeoutMs: number;
    headers: Record<string, string[]>;
    tls?: { certificate: string; key: string; clientcas: string[]; minimumtls: string };
    workers: number;
    timeouts: {
      /** The whole request head must arrive within this (slowloris guard). */
      headerMs: number;
      /** A kept-alive connection between requests. */
      idleMs: number;
      /** A connection inside a request (upload body or download) that moves no byte for this long. */
      stallMs: number;
    };
    limits: {
      /** Open connections per process; 0 = unlimited. */
      maxConnections: number;
      /** Bytes of request line plus headers (above: 431). */
      maxHeaderBytes: number;
    };
  };
  catalog: { maxentries: number };
  tags: { maxtags?: number };
  redis?: RedisConfig;
  auth?: AuthConfig;
}

/** `auth`: exactly one scheme. */
export type AuthConfig =
  | { kind: 'htpasswd'; realm: string; path: string }
  | {
      kind: 'token';
      realm: string;
      autoredirect: boolean;
      service: string;
      issuer: string;
      rootcertbundle?: string;
      jwks?: string;
      signingalgorithms?: string[];
      /** Berth's built-in token server, served by the registry itself at `path`. */
      builtin?: { path: string; htpasswd: string; rules: string; key?: string; expirationSeconds: number };
    };

/** distribution's `storage.s3` keys, defaulted. */
export interface S3Config {
  bucket: string;
  region: string;
  regionendpoint?: string;
  forcepathstyle: boolean;
  accesskey?: string;
  secretkey?: string;
  sessiontoken?: string;
  rootdirectory: string;
  secure: boolean;
  skipverify: boolean;
  chunksize: number;
  multipartcopychunksize: number;
  multipartcopythresholdsize: number;
  storageclass?: string;
  encrypt: boolean;
  keyid?: string;
  objectacl?: string;
  useragent?: string;
}

/** distribution's `redis` section (2.8 `addr` or 3.x `addrs`), defaulted. */
export interface RedisConfig {
  addr: string;
  username?: string;
  password?: string;
  db: number;
  dialTimeoutMs?: number;
  readTimeoutMs?: number;
  tls: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadResult {
  config: BerthConfig;
  warnings: string[];
}

/** The embedded default: filesystem storage under ./data, port 5000, deletes enabled. */
export const DEFAULT_CONFIG_YAML = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ./data
  delete:
    enabled: true
http:
  addr: :5000
`;

type Raw = Record<string, unknown>;
const isObj = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

const DRIVERS = ['filesystem', 'inmemory', 's3', 'gcs', 'azure'];

/** Applies `REGISTRY_*` overrides (split on `_`, matched case-insensitively, values parsed as YAML). */
export function applyEnvOverrides(raw: Raw, env: NodeJS.ProcessEnv, warnings: string[]): Raw {
  const entries = Object.entries(env)
    .filter(([k, v]) => k.startsWith('REGISTRY_') && k !== 'REGISTRY_CONFIGURATION_PATH' && v !== undefined)
    .sort(([a], [b]) => a.length - b.length || (a < b ? -1 : 1));
  for (const [key, value] of entries) {
    const parts = key.slice('REGISTRY_'.length).toLowerCase().split('_');
    let parsed: unknown;
    try {
      parsed = parseYaml(value as string);
    } catch {
      parsed = value;
    }
    if (parsed === null) parsed = '';
    // REGISTRY_STORAGE=<driver> selects the storage driver, keeping the other storage keys.
    if (parts.length === 1 && parts[0] === 'storage' && typeof parsed === 'string') {
      const storage = isObj(raw.storage) ? raw.storage : {};
      for (const d of DRIVERS) if (d !== parsed) delete storage[d];
      if (!isObj(storage[parsed])) storage[parsed] = {};
      raw.storage = storage;
      continue;
    }
    let node: unknown = raw;
    let schema: Schema | undefined = CONFIG_SCHEMA;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const last = i === parts.length - 1;
      if (Array.isArray(node) && /^\d+$/.test(part)) {
        const idx = Number(part);
        if (last) node[idx] = parsed;
        else {
          if (!isObj(node[idx]) && !Array.isArray(node[idx])) node[idx] = {};
          node = node[idx];
        }
        schema = schema?.kind === 'list' ? schema.of : undefined;
        continue;
      }
      if (!isObj(node)) {
        warnings.push(`environment variable ${key} does not match the configuration structure; ignored`);
        break;
      }
      const existing = Object.keys(node).find((k) => k.toLowerCase() === part) ?? part;
      const childSchema: Schema | undefined =
        schema?.kind === 'object' ? schema.keys[existing] : schema?.kind === 'map' ? schema.of : undefined;
      if (last) {
        node[existing] = parsed;
      } else {
        const next = parts[i + 1]!;
        if (!isObj(node[existing]) && !Array.isArray(node[existing])) {
          node[existing] = childSchema?.kind === 'list' || /^\d+$/.test(next) ? [] : {};
        }
        node = node[existing];
      }
      schema = childSchema;
    }
  }
  return raw;
}

/** Walks raw against the schema, collecting unknown keys (warnings) and invalid values (errors). */
function check(value: unknown, schema: Schema, path: string, warnings: string[], errors: string[]): void {
  const at = path || '(root)';
  switch (schema.kind) {
    case 'any':
      return;
    case 'object':
      if (value === null || value === undefined || value === '') return;
      if (!isObj(value)) {
        errors.push(`${at}: expected a mapping, got ${JSON.stringify(value)}`);
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        const sub = schema.keys[k];
        if (sub) check(v, sub, path ? `${path}.${k}` : k, warnings, errors);
        else if (!schema.open) warnings.push(`unknown configuration key ${path ? `${path}.${k}` : k} (ignored)`);
      }
      return;
    case 'map':
      if (value === null || value === undefined) return;
      if (!isObj(value)) {
        errors.push(`${at}: expected a mapping`);
        return;
      }
      for (const [k, v] of Object.entries(value)) check(v, schema.of, `${path}.${k}`, warnings, errors);
      return;
    case 'list':
      if (value === null || value === undefined) return;
      if (!Array.isArray(value)) {
        errors.push(`${at}: expected a list`);
        return;
      }
      value.forEach((v, i) => check(v, schema.of, `${path}[${i}]`, warnings, errors));
      return;
    case 'string':
      if (value === null || value === undefined) return;
      if (typeof value !== 'string' && typeof value !== 'number') errors.push(`${at}: expected a string, got ${JSON.stringify(value)}`);
      else if (schema.enum && !schema.enum.includes(String(value))) errors.push(`${at}: expected one of ${schema.enum.join(', ')}, got ${JSON.stringify(value)}`);
      return;
    case 'bool':
      if (value !== undefined && value !== null && typeof value !== 'boolean') errors.push(`${at}: expected true or false, got ${JSON.stringify(value)}`);
      return;
    case 'int':
      if (value === undefined || value === null) return;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < (schema.min ?? 0)) {
        errors.push(`${at}: expected an integer >= ${schema.min ?? 0}, got ${JSON.stringify(value)}`);
      }
      return;
    case 'duration':
      if (value === undefined || value === null) return;
      if (parseDuration(value) === undefined) errors.push(`${at}: expected a duration such as 30s, 10m or 168h, got ${JSON.stringify(value)}`);
      return;
  }
}

function get(raw: Raw, path: string): unknown {
  let v: unknown = raw;
  for (const p of path.split('.')) {
    if (!isObj(v)) return undefined;
    v = v[p];
  }
  return v;
}

/** Parses, overrides, validates and defaults a configuration document. Throws {@link ConfigError}. */
export function loadConfigText(text: string, env: NodeJS.ProcessEnv = process.env): LoadResult {
  const warnings: string[] = [];
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError([`not valid YAML: ${(e as Error).message}`]);
  }
  if (doc === null || doc === undefined) doc = {};
  if (!isObj(doc)) throw new ConfigError(['(root): expected a mapping of configuration sections']);
  const raw = applyEnvOverrides(doc, env, warnings);
  const errors: string[] = [];
  check(raw, CONFIG_SCHEMA, '', warnings, errors);

  const storage = isObj(raw.storage) ? raw.storage : {};
  const drivers = DRIVERS.filter((d) => d in storage);
  let driver: BerthConfig['storage']['driver'] = 'filesystem';
  if (drivers.length === 0) errors.push('storage: expected exactly one driver (filesystem, inmemory or s3), found none');
  else if (drivers.length > 1) errors.push(`storage: expected exactly one driver, found ${drivers.join(', ')}`);
  else if (drivers[0] !== 'filesystem' && drivers[0] !== 'inmemory' && drivers[0] !== 's3') errors.push(`storage.${drivers[0]}: driver not supported yet (supported: filesystem, inmemory, s3)`);
  else driver = drivers[0];
  if (driver === 's3') {
    for (const k of ['bucket', 'region']) if (!get(raw, `storage.s3.${k}`)) errors.push(`storage.s3.${k}: required`);
  }
  const cacheKind = get(raw, 'storage.cache.blobdescriptor');
  const redisRaw = isObj(raw.redis) ? raw.redis : undefined;
  const redisAddr = redisRaw ? (redisRaw.addr ?? (Array.isArray(redisRaw.addrs) ? redisRaw.addrs[0] : undefined)) : undefined;
  if (cacheKind === 'redis' && !redisAddr) errors.push('redis.addr: required when storage.cache.blobdescriptor is redis');

  // An auth section Berth cannot enforce must never start a silently open registry.
  const authRaw = isObj(raw.auth) ? raw.auth : {};
  const authKinds = Object.keys(authRaw).filter((k) => k !== 'none');
  if (authKinds.length > 1) errors.push(`auth: expected one of htpasswd or token, found ${authKinds.join(', ')}`);
  if (authKinds.includes('silly')) errors.push('auth.silly: not supported (it lets anyone in); use auth.htpasswd or auth.token');
  if (isObj(authRaw.htpasswd) && !authRaw.htpasswd.path) errors.push('auth.htpasswd.path: required');
  if (isObj(authRaw.token)) {
    const t = authRaw.token;
    const builtin = isObj(t.builtin);
    if (!builtin) for (const k of ['realm', 'service', 'issuer']) if (!t[k]) errors.push(`auth.token.${k}: required`);
    if (!builtin && !t.rootcertbundle && !t.jwks) errors.push('auth.token: rootcertbundle or jwks is required to verify tokens (or builtin: for Berth\'s own token server)');
    if (builtin && !isObj(t.builtin) ) errors.push('auth.token.builtin: expected a mapping');
    if (builtin && isObj(t.builtin) && !t.builtin.htpasswd) errors.push('auth.token.builtin.htpasswd: required (the users who may log in)');
    if (builtin && isObj(t.builtin) && !t.builtin.rules) errors.push('auth.token.builtin.rules: required (who may pull, push and delete what)');
    if (Array.isArray(t.signingalgorithms) && t.signingalgorithms.some((a) => a === 'none' || String(a).startsWith('HS'))) {
      errors.push('auth.token.signingalgorithms: "none" and HMAC algorithms are never accepted');
    }
  }
  for (const section of ['notifications', 'proxy', 'middleware', 'health', 'validation', 'policy', 'reporting']) {
    const v = raw[section];
    if (isObj(v) && Object.keys(v).length > 0) warnings.push(`${section}: not implemented by this version of Berth (ignored)`);
  }
  if (isObj(storage.redirect) && driver !== 's3' && get(raw, 'storage.redirect.disable') !== true) {
    warnings.push(`storage.redirect: the ${driver} driver has no URLs to redirect to; blobs are served directly`);
  }
  if (get(raw, 'http.net') === 'unix') errors.push('http.net: unix sockets are not supported by this version of Berth; use tcp');
  const addr = get(raw, 'http.addr');
  if (addr !== undefined && addr !== null && !/^(?:\[[^\]]+\]|[^:]*):\d{1,5}$/.test(String(addr))) {
    errors.push(`http.addr: expected host:port or :port, got ${JSON.stringify(addr)}`);
  }
  const tlsRaw = get(raw, 'http.tls');
  if (isObj(tlsRaw) && (tlsRaw.certificate || tlsRaw.key) && !(tlsRaw.certificate && tlsRaw.key)) {
    errors.push('http.tls: expected both certificate and key');
  }
  const prefix = String(get(raw, 'http.prefix') ?? '');
  if (prefix && !/^\/[A-Za-z0-9._~/-]*$/.test(prefix)) errors.push(`http.prefix: expected a path starting with /, got ${JSON.stringify(prefix)}`);
  if (errors.length > 0) throw new ConfigError(errors);

  const dur = (path: string, dflt: number): number => {
    const v = get(raw, path);
    return v === undefined || v === null ? dflt : parseDuration(v)!;
  };
  const bool = (path: string, dflt: boolean): boolean => {
    const v = get(raw, path);
    return typeof v === 'boolean' ? v : dflt;
  };
  const level = String(get(raw, 'log.level') ?? get(raw, 'loglevel') ?? 'info') as BerthConfig['log']['level'];
  const purgingRaw = get(raw, 'storage.maintenance.uploadpurging');
  const tls = isObj(tlsRaw) && tlsRaw.certificate
    ? {
        certificate: String(tlsRaw.certificate),
        key: String(tlsRaw.key),
        clientcas: Array.isArray(tlsRaw.clientcas) ? tlsRaw.clientcas.map(String) : [],
        minimumtls: String(tlsRaw.minimumtls ?? 'tls1.2'),
      }
    : undefined;
  const config: BerthConfig = {
    log: {
      level,
      accesslog: !bool('log.accesslog.disabled', false),
      fields: (isObj(get(raw, 'log.fields')) ? get(raw, 'log.fields') : {}) as Record<string, unknown>,
    },
    storage: {
      driver,
      rootdirectory: String(get(raw, 'storage.filesystem.rootdirectory') ?? '/var/lib/registry'),
      blobDescriptorCacheSize: Number(get(raw, 'storage.cache.blobdescriptorsize') ?? 10_000),
      deleteEnabled: bool('storage.delete.enabled', false),
      redirectDisabled: bool('storage.redirect.disable', false),
      uploadPurging: {
        enabled: purgingRaw === false ? false : bool('storage.maintenance.uploadpurging.enabled', true),
        ageMs: dur('storage.maintenance.uploadpurging.age', 168 * 3600_000),
        intervalMs: dur('storage.maintenance.uploadpurging.interval', 24 * 3600_000),
        dryrun: bool('storage.maintenance.uploadpurging.dryrun', false),
      },
      readonly: bool('storage.maintenance.readonly.enabled', false),
    },
    http: {
      addr: String(get(raw, 'http.addr') ?? ':5000'),
      prefix: prefix.replace(/\/+$/, ''),
      relativeurls: bool('http.relativeurls', false),
      drainTimeoutMs: dur('http.draintimeout', 30_000),
      headers: (get(raw, 'http.headers') ?? {}) as Record<string, string[]>,
      workers: Number(get(raw, 'http.workers') ?? 1),
      timeouts: {
        headerMs: dur('http.timeouts.header', 60_000),
        idleMs: dur('http.timeouts.idle', 65_000),
        stallMs: dur('http.timeouts.stall', 300_000),
      },
      limits: {
        maxConnections: Number(get(raw, 'http.limits.maxconnections') ?? 0),
        maxHeaderBytes: Number(get(raw, 'http.limits.maxheaderbytes') ?? 16_384),
      },
    },
    catalog: { maxentries: Number(get(raw, 'catalog.maxentries') ?? 1000) },
    tags: {},
  };
  const host = get(raw, 'http.host');
  if (host) config.http.host = String(host).replace(/\/+$/, '');
  const secret = get(raw, 'http.secret');
  if (secret) config.http.secret = String(secret);
  if (tls) config.http.tls = tls;
  if (cacheKind === 'inmemory' || cacheKind === 'redis') config.storage.blobDescriptorCache = cacheKind;
  if (driver === 's3') config.storage.s3 = s3Config(raw);
  if (redisRaw && redisAddr) {
    const ms = (k: string): number | undefined => (redisRaw[k] === undefined || redisRaw[k] === null ? undefined : parseDuration(redisRaw[k]));
    const tlsOn = isObj(redisRaw.tls) && (redisRaw.tls.enabled === true || Boolean(redisRaw.tls.certificate));
    config.redis = { addr: String(redisAddr), db: Number(redisRaw.db ?? 0), tls: tlsOn };
    if (redisRaw.username) config.redis.username = String(redisRaw.username);
    if (redisRaw.password) config.redis.password = String(redisRaw.password);
    const dial = ms('dialtimeout');
    if (dial !== undefined) config.redis.dialTimeoutMs = dial;
    const read = ms('readtimeout');
    if (read !== undefined) config.redis.readTimeoutMs = read;
  }
  if (isObj(authRaw.htpasswd)) {
    config.auth = { kind: 'htpasswd', realm: String(authRaw.htpasswd.realm ?? 'Registry Realm'), path: String(authRaw.htpasswd.path) };
  } else if (isObj(authRaw.token)) {
    const t = authRaw.token;
    const b = isObj(t.builtin) ? t.builtin : undefined;
    const path = String(b?.path ?? t.autoredirectpath ?? '/auth/token');
    // The built-in server answers at `path` on the registry's own origin unless a realm is given.
    const autoredirect = t.autoredirect === true || (b !== undefined && !t.realm);
    const token: Extract<AuthConfig, { kind: 'token' }> = {
      kind: 'token',
      realm: autoredirect ? String(t.autoredirectpath ?? path) : String(t.realm),
      autoredirect,
      service: String(t.service ?? 'berth'),
      issuer: String(t.issuer ?? 'berth'),
    };
    if (t.rootcertbundle) token.rootcertbundle = String(t.rootcertbundle);
    if (t.jwks) token.jwks = String(t.jwks);
    if (Array.isArray(t.signingalgorithms)) token.signingalgorithms = t.signingalgorithms.map(String);
    if (b) {
      token.builtin = { path, htpasswd: String(b.htpasswd), rules: String(b.rules), expirationSeconds: b.expiration === undefined ? 300 : Math.max(60, Math.round(parseDuration(b.expiration)! / 1000)) };
      if (b.key) token.builtin.key = String(b.key);
    }
    config.auth = token;
  }
  const maxtags = get(raw, 'tags.maxtags');
  if (typeof maxtags === 'number') config.tags.maxtags = maxtags;
  return { config, warnings };
}

function s3Config(raw: Raw): S3Config {
  const v = (k: string): unknown => get(raw, `storage.s3.${k}`);
  const opt = (k: string): string | undefined => {
    const x = v(k);
    return x === undefined || x === null || x === '' ? undefined : String(x);
  };
  const flag = (k: string, dflt: boolean): boolean => (typeof v(k) === 'boolean' ? (v(k) as boolean) : dflt);
  const c: S3Config = {
    bucket: String(v('bucket')),
    region: String(v('region')),
    forcepathstyle: flag('forcepathstyle', false),
    rootdirectory: String(v('rootdirectory') ?? ''),
    secure: flag('secure', true),
    skipverify: flag('skipverify', false),
    chunksize: Number(v('chunksize') ?? 10 * 1024 * 1024),
    multipartcopychunksize: Number(v('multipartcopychunksize') ?? 32 * 1024 * 1024),
    multipartcopythresholdsize: Number(v('multipartcopythresholdsize') ?? 32 * 1024 * 1024),
    encrypt: flag('encrypt', false),
  };
  for (const k of ['regionendpoint', 'accesskey', 'secretkey', 'sessiontoken', 'keyid', 'objectacl', 'useragent'] as const) {
    const x = opt(k);
    if (x !== undefined) c[k] = x;
  }
  const sc = opt('storageclass');
  if (sc && sc !== 'NONE') c.storageclass = sc;
  return c;
}

/**
 * Loads the configuration from `path`, else `REGISTRY_CONFIGURATION_PATH`, else the embedded default.
 */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadResult & { source: string } {
  const file = path ?? env.REGISTRY_CONFIGURATION_PATH;
  if (!file) return { ...loadConfigText(DEFAULT_CONFIG_YAML, env), source: '(embedded default)' };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read configuration file ${file}: ${(e as Error).message}`]);
  }
  return { ...loadConfigText(text, env), source: file };
}
