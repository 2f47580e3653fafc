/**
 * The blob-descriptor cache of distribution's `registry/storage/cache`: "what is blob <digest> (size, media
 * type)" globally, and "is <digest> linked into repository <repo>", answered without storage round trips.
 *
 * Two implementations: a bounded in-process LRU, and Redis with exactly distribution's key schema, so Berth and
 * distribution instances can share one Redis:
 *
 * - hash `blobs::<digest>`: fields `digest`, `size`, `mediatype` (the global descriptor);
 * - set `repository::<repo>::blobs`: the digests linked into the repository;
 * - hash `repository::<repo>::blobs::<digest>`: field `mediatype` (the repository's media type override).
 *
 * A repository-scoped hit needs all three: set membership, a global descriptor with `digest` and `size`, and
 * the repository hash's `mediatype` (as distribution's `repositoryScopedRedisBlobDescriptorService.Stat`).
 * No key gets a TTL (distribution sets none and expects `maxmemory-policy allkeys-lru`).
 *
 * The implementations throw when the backend fails; {@link CacheGuard} is what the registry uses: it turns
 * read and write failures into misses (the registry falls through to storage) and reports them.
 */
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import { OciError } from '../spec/errors.ts';
import { ByteLru } from './byte-lru.ts';
import type { Digest } from '../spec/digest.ts';
import type { RepoName } from '../spec/names.ts';

export interface BlobDescriptor {
  digest: Digest;
  size: number;
  mediaType: string;
}

export interface BlobDescriptorCache {
  /** The global descriptor of a blob, or undefined when not cached. */
  stat(digest: Digest): Promise<BlobDescriptor | undefined>;
  /** Sets the global descriptor (`digest` and `size` replace, the media type is kept when already set). */
  setDescriptor(digest: Digest, desc: BlobDescriptor): Promise<void>;
  /** Forgets the global descriptor. */
  clear(digest: Digest): Promise<void>;
  /** The descriptor of a blob known to be linked into `repo` (with the repository's media type), else undefined. */
  statInRepo(repo: RepoName, digest: Digest): Promise<BlobDescriptor | undefined>;
  /** Records that `digest` is linked into `repo`, and sets its global descriptor. */
  setInRepo(repo: RepoName, digest: Digest, desc: BlobDescriptor): Promise<void>;
  /**
   * Forgets that `digest` is linked into `repo`, and (as distribution's repository-scoped `Clear` does) its
   * global descriptor, so no repository answers from the cache until the blob is described again.
   */
  clearInRepo(repo: RepoName, digest: Digest): Promise<void>;
  /** Releases connections; the cache must not be used afterwards. */
  close(): Promise<void>;
}

/** distribution's media type for blobs whose type is not known (every uploaded layer and config). */
export const BLOB_MEDIA_TYPE = 'application/octet-stream';

function checkDescriptor(desc: BlobDescriptor): void {
  if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new Error(`descriptor cache: invalid size ${desc.size} for ${desc.digest}`);
}

/**
 * The in-process cache: one LRU of global descriptors and one of repository memberships (each holding the
 * repository's media type), each bounded by `size` entries. Only correct when this process is the only writer
 * of the storage: another process's delete is never seen here.
 */
export function inmemoryDescriptorCache(size: number): BlobDescriptorCache & { readonly entries: number } {
  if (!Number.isSafeInteger(size) || size < 1) throw new Error(`descriptor cache: size must be a positive integer, got ${size}`);
  const globals = new ByteLru<BlobDescriptor>(size, () => 1);
  const members = new ByteLru<string>(size, () => 1);
  // '@' cannot occur in a repository name, so the key is unambiguous.
  const memberKey = (repo: RepoName, digest: Digest): string => `${repo}@${digest}`;
  const setGlobal = (digest: Digest, desc: BlobDescriptor): void => {
    const old = globals.peek(digest);
    globals.set(digest, { digest: desc.digest, size: desc.size, mediaType: old?.mediaType || desc.mediaType });
  };
  return {
    get entries() {
      return globals.size + members.size;
    },
    async stat(digest) {
      const d = globals.get(digest);
      return d && { ...d };
    },
    async setDescriptor(digest, desc) {
      checkDescriptor(desc);
      setGlobal(digest, desc);
    },
    async clear(digest) {
      globals.delete(digest);
    },
    async statInRepo(repo, digest) {
      const mediaType = members.get(memberKey(repo, digest));
      if (mediaType === undefined) return undefined;
      const d = globals.get(digest);
      if (!d) return undefined;
      return { ...d, mediaType: mediaType || d.mediaType };
    },
    async setInRepo(repo, digest, desc) {
      checkDescriptor(desc);
      setGlobal(digest, desc);
      members.set(memberKey(repo, digest), desc.mediaType);
    },
    async clearInRepo(repo, digest) {
      members.delete(memberKey(repo, digest));
      globals.delete(digest);
    },
    async close() {},
  };
}

export interface RedisCacheOptions {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db?: number;
  tls?: boolean;
  /** Connection timeout (distribution's `redis.dialtimeout`); default 5 s as go-redis. */
  connectTimeoutMs?: number;
  /** Timeout of each command (distribution's `redis.readtimeout`); default 3 s as go-redis. */
  commandTimeoutMs?: number;
  /** Called on connection errors (the caller throttles). */
  onError?: (err: unknown, op: string) => void;
}

/** distribution's keys. */
export const redisKeys = {
  descriptor: (digest: string): string => `blobs::${digest}`,
  repoSet: (repo: string): string => `repository::${repo}::blobs`,
  repoDescriptor: (repo: string, digest: string): string => `repository::${repo}::blobs::${digest}`,
};

type ExecResult = [error: Error | null, result: unknown][] | null;

function results(r: ExecResult): unknown[] {
  if (!r) throw new Error('redis transaction aborted');
  return r.map(([err, v]) => {
    if (err) throw err;
    return v;
  });
}

/**
 * The Redis cache over one connection (ioredis pipelines commands on it). It connects on first use; until the
 * first failure, commands wait for the connection (bounded by the command timeout). After a failure, commands
 * are refused at once while the client reconnects in the background, so an outage costs requests no time.
 * Commands are never retried or re-sent after a reconnection: a late write could resurrect a cleared entry.
 */
export function redisDescriptorCache(opts: RedisCacheOptions): BlobDescriptorCache & { readonly client: Redis } {
  // ioredis is loaded only when a Redis cache is configured: it adds ~20 MiB to a process.
  const { Redis: RedisClient } = createRequire(import.meta.url)('ioredis') as typeof import('ioredis');
  const client = new RedisClient({
    host: opts.host,
    port: opts.port,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    db: opts.db ?? 0,
    ...(opts.tls ? { tls: { servername: opts.host } } : {}),
    lazyConnect: true,
    connectTimeout: opts.connectTimeoutMs ?? 5_000,
    commandTimeout: opts.commandTimeoutMs ?? 3_000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    enableOfflineQueue: true,
    retryStrategy: (times) => Math.min(100 * times, 2_000),
    connectionName: 'berth-blob-descriptor-cache',
  });
  let troubled = false;
  let closed = false;
  client.on('error', (err: unknown) => {
    troubled = true;
    opts.onError?.(err, 'connection');
  });
  client.on('close', () => {
    troubled = true;
  });

  const ready = (): Redis => {
    if (closed) throw new Error('descriptor cache is closed');
    if (client.status !== 'ready' && troubled) throw new Error(`redis is not connected (${client.status})`);
    return client;
  };

  const K = redisKeys;
  const readGlobal = (digest: string, fields: unknown[]): BlobDescriptor | undefined => {
    const [d, size, mediaType] = fields as (string | null)[];
    // As distribution: a hash without `digest` or `size` (e.g. the old `length` field) is a miss.
    if (d === null || d === undefined || size === null || size === undefined) return undefined;
    const n = Number(size);
    if (!Number.isSafeInteger(n) || n < 0) return undefined;
    return { digest: d as Digest, size: n, mediaType: mediaType ?? '' };
  };

  return {
    client,
    async stat(digest) {
      const fields = await ready().hmget(K.descriptor(digest), 'digest', 'size', 'mediatype');
      return readGlobal(digest, fields);
    },
    async setDescriptor(digest, desc) {
      checkDescriptor(desc);
      results(
        await ready()
          .multi()
          .hset(K.descriptor(digest), 'digest', desc.digest, 'size', String(desc.size))
          .hsetnx(K.descriptor(digest), 'mediatype', desc.mediaType)
          .exec(),
      );
    },
    async clear(digest) {
      await ready().hdel(K.descriptor(digest), 'digest', 'size', 'mediatype');
    },
    async statInRepo(repo, digest) {
      const [member, fields, repoType] = results(
        await ready().multi().sismember(K.repoSet(repo), digest).hmget(K.descriptor(digest), 'digest', 'size', 'mediatype').hget(K.repoDescriptor(repo, digest), 'mediatype').exec(),
      );
      if (member !== 1) return undefined;
      const d = readGlobal(digest, fields as unknown[]);
      // distribution (go-redis) treats a missing repository media type as a miss too.
      if (!d || repoType === null || repoType === undefined) return undefined;
      if (repoType !== '') d.mediaType = repoType as string;
      return d;
    },
    async setInRepo(repo, digest, desc) {
      checkDescriptor(desc);
      results(
        await ready()
          .multi()
          .sadd(K.repoSet(repo), digest)
          .hset(K.descriptor(digest), 'digest', desc.digest, 'size', String(desc.size))
          .hsetnx(K.descriptor(digest), 'mediatype', desc.mediaType)
          .hset(K.repoDescriptor(repo, digest), 'mediatype', desc.mediaType)
          .exec(),
      );
    },
    async clearInRepo(repo, digest) {
      results(await ready().multi().srem(K.repoSet(repo), digest).del(K.repoDescriptor(repo, digest)).hdel(K.descriptor(digest), 'digest', 'size', 'mediatype').exec());
    },
    async close() {
      if (closed) return;
      closed = true;
      if (client.status === 'ready') {
        // QUIT lets replies in flight arrive; the socket is closed by the server right after.
        let timer: NodeJS.Timeout | undefined;
        const ended = new Promise<void>((ok) => {
          client.once('end', ok);
          timer = setTimeout(ok, 1_000);
        });
        await client.quit().catch(() => undefined);
        await ended;
        clearTimeout(timer);
      }
      // Not connected (never used, or reconnecting after a failure): stop the reconnection timer.
      client.disconnect();
    },
  };
}

/**
 * Calls `warn` for the first error and then at most once per `intervalMs`, with the number of errors not
 * reported since: a Redis outage logs a line now and then, not one per request.
 */
export function throttledWarn(warn: (err: unknown, op: string, suppressed: number) => void, intervalMs = 10_000): (err: unknown, op: string) => void {
  let last = -Infinity;
  let suppressed = 0;
  return (err, op) => {
    const now = Date.now();
    if (now - last < intervalMs) {
      suppressed++;
      return;
    }
    last = now;
    warn(err, op, suppressed);
    suppressed = 0;
  };
}

/**
 * The cache as the registry uses it: reads that fail are misses, writes that fail are skipped (both reported
 * through `onError`), so an unreachable cache never fails a request that storage can answer. Invalidation
 * is the exception: {@link invalidate} throws `UNAVAILABLE` when the entry cannot be cleared, because
 * proceeding would leave an entry that answers for a deleted blob once the cache is back.
 */
export class CacheGuard {
  constructor(
    private readonly cache: BlobDescriptorCache,
    private readonly onError: (err: unknown, op: string) => void = () => undefined,
  ) {}

  /** Runs a cache operation; a failure is reported and answered with `fallback`. */
  private async guarded<T>(op: string, run: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await run();
    } catch (e) {
      this.onError(e, op);
      return fallback;
    }
  }

  stat(digest: Digest): Promise<BlobDescriptor | undefined> {
    return this.guarded('stat', () => this.cache.stat(digest), undefined);
  }

  statInRepo(repo: RepoName, digest: Digest): Promise<BlobDescriptor | undefined> {
    return this.guarded('statInRepo', () => this.cache.statInRepo(repo, digest), undefined);
  }

  /** Returns whether the descriptor was set. */
  setDescriptor(digest: Digest, desc: BlobDescriptor): Promise<boolean> {
    return this.guarded('setDescriptor', () => this.cache.setDescriptor(digest, desc).then(() => true), false);
  }

  /** Returns whether the membership was set. */
  setInRepo(repo: RepoName, digest: Digest, desc: BlobDescriptor): Promise<boolean> {
    return this.guarded('setInRepo', () => this.cache.setInRepo(repo, digest, desc).then(() => true), false);
  }

  /** Clears a membership, or throws `UNAVAILABLE` (before the caller changes storage). */
  async invalidate(repo: RepoName, digest: Digest): Promise<void> {
    try {
      await this.cache.clearInRepo(repo, digest);
    } catch (e) {
      this.onError(e, 'clearInRepo');
      throw new OciError('UNAVAILABLE', { reason: 'the blob descriptor cache cannot be updated; nothing was deleted, retry later', digest });
    }
  }

  /** Clears a membership when possible (reporting failures). */
  forget(repo: RepoName, digest: Digest): Promise<void> {
    return this.guarded('clearInRepo', () => this.cache.clearInRepo(repo, digest), undefined);
  }

  close(): Promise<void> {
    return this.cache.close();
  }
}
