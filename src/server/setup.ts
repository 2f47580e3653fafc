/**
 * What both the first (supervising) process and the serving code need: the logger, the storage driver table, the
 * registry over it, and the shared http.secret. Kept apart from the HTTP server.
 */
import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import type { BerthConfig } from '../config/config.ts';
import { checkedDriver } from '../storage/checked.ts';
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import { filesystemDriver } from '../storage/filesystem.ts';
import { inmemoryDriver } from '../storage/memory.ts';
import { s3Driver } from '../storage/s3.ts';
import { Registry } from '../registry/registry.ts';
import { type BlobDescriptorCache, inmemoryDescriptorCache, redisDescriptorCache, throttledWarn } from '../registry/descriptor-cache.ts';

const SECRET_PATH = '/berth/http-secret';

/** Explicit table of storage drivers (no registration by import side effect). */
const DRIVERS: Record<BerthConfig['storage']['driver'], (c: BerthConfig) => StorageDriver> = {
  filesystem: (c) => filesystemDriver({ rootdirectory: resolve(c.storage.rootdirectory) }),
  inmemory: () => inmemoryDriver(),
  s3: (c) => s3Driver({ ...c.storage.s3!, redirect: !c.storage.redirectDisabled }),
};

/**
 * Wraps the configured driver (storage middleware for embedders, e.g. tracing or fault injection in tests).
 * The path checks still run first, outside the wrapper.
 */
export type DriverWrapper = (driver: StorageDriver) => StorageDriver;

/** `host:port`, `:port` or `[v6]:port` (distribution's address syntax). */
export function parseAddr(addr: string, key = 'http.addr'): { host?: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr.trim());
  if (!m) throw new Error(`${key}: expected host:port or :port, got ${JSON.stringify(addr)}`);
  const host = m[1] ?? m[2];
  const out: { host?: string; port: number } = { port: Number(m[3]) };
  if (host) out.host = host;
  return out;
}

/** The configured blob-descriptor cache (`storage.cache.blobdescriptor`), if any. */
function descriptorCache(config: BerthConfig, log: Logger, onError: (err: unknown, op: string) => void): BlobDescriptorCache | undefined {
  const kind = config.storage.blobDescriptorCache;
  if (kind === 'inmemory') {
    // Each worker would keep its own cache and never see a delete made through another worker.
    if ((config.http.workers === 0 ? availableParallelism() : config.http.workers) > 1) {
      log.warn('storage.cache.blobdescriptor: inmemory is per process and http.workers > 1; descriptor caching is off (use redis to share one)');
      return undefined;
    }
    return inmemoryDescriptorCache(config.storage.blobDescriptorCacheSize);
  }
  if (kind === 'redis') {
    const r = config.redis;
    if (!r) throw new Error('storage.cache.blobdescriptor is redis but the redis section has no addr');
    // distribution's addr is host:port; a bare host means Redis's default port.
    const addr = /:\d+$/.test(r.addr) ? parseAddr(r.addr, 'redis.addr') : { host: r.addr, port: 6379 };
    return redisDescriptorCache({
      host: addr.host ?? '127.0.0.1',
      port: addr.port,
      db: r.db,
      tls: r.tls,
      ...(r.username !== undefined ? { username: r.username } : {}),
      ...(r.password !== undefined ? { password: r.password } : {}),
      ...(r.dialTimeoutMs !== undefined ? { connectTimeoutMs: r.dialTimeoutMs } : {}),
      ...(r.readTimeoutMs !== undefined ? { commandTimeoutMs: r.readTimeoutMs } : {}),
      onError,
    });
  }
  return undefined;
}

/**
 * The registry over the configured storage and descriptor cache (for serving and maintenance commands). A
 * Redis cache connects on first use, so a command that never touches it opens no connection.
 */
export function openRegistry(config: BerthConfig, log: Logger = createLogger(config), wrapDriver?: DriverWrapper): Registry {
  // One throttle for connection errors and failed operations: an outage logs a line every 10 s, not per request.
  const onCacheError = throttledWarn((err, op, suppressed) => {
    log.warn({ err, op, suppressed }, 'blob descriptor cache error: reads and writes fall through to storage, deletes answer 503 until it is back');
  });
  const cache = descriptorCache(config, log, onCacheError);
  return new Registry({
    driver: openDriver(config, wrapDriver),
    deleteEnabled: config.storage.deleteEnabled,
    ...(cache ? { descriptorCache: cache, onCacheError } : {}),
  });
}

/**
 * The configured storage driver (inside `wrapDriver` if given) behind the path checks. Alone, it serves what
 * needs storage but no registry (the first process settling the shared secret and keys before it forks), so
 * no descriptor cache is set up twice and its warnings are not logged twice.
 */
export function openDriver(config: BerthConfig, wrapDriver?: DriverWrapper): StorageDriver {
  const driver = DRIVERS[config.storage.driver](config);
  return checkedDriver(wrapDriver ? wrapDriver(driver) : driver);
}

export function createLogger(config: BerthConfig): Logger {
  return pino({ level: config.log.level, base: { service: 'berth', pid: process.pid, ...config.log.fields }, redact: { paths: ['req.headers.authorization', 'authorization', 'password'], remove: true } });
}

/** The http.secret: configured, else one persisted in storage so upload URLs survive restarts. */
export async function loadSecret(config: BerthConfig, driver: StorageDriver, log: Logger): Promise<string> {
  if (config.http.secret) return config.http.secret;
  try {
    return (await driver.getContent(SECRET_PATH, { maxSize: 1024 })).toString('utf8');
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const secret = randomBytes(32).toString('hex');
  await driver.putContent(SECRET_PATH, Buffer.from(secret));
  log.warn('http.secret is not set; generated one and stored it in the storage root (set http.secret when running several instances)');
  return secret;
}

