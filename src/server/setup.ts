/**
 * What both the cluster primary and the serving processes need: the logger, the storage driver table, the
 * registry over it, and the shared http.secret. Kept apart from the HTTP server so the primary stays small.
 */
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

const SECRET_PATH = '/berth/http-secret';

/** Explicit table of storage drivers (no registration by import side effect). */
const DRIVERS: Record<BerthConfig['storage']['driver'], (c: BerthConfig) => StorageDriver> = {
  filesystem: (c) => filesystemDriver({ rootdirectory: resolve(c.storage.rootdirectory) }),
  inmemory: () => inmemoryDriver(),
  s3: (c) => s3Driver({ ...c.storage.s3!, redirect: !c.storage.redirectDisabled }),
};

/** The registry over the configured storage, without a server (for maintenance commands). */
export function openRegistry(config: BerthConfig): Registry {
  return new Registry({ driver: checkedDriver(DRIVERS[config.storage.driver](config)), deleteEnabled: config.storage.deleteEnabled });
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

