/**
 * The blob-descriptor cache: one contract run against the in-memory LRU and against a real redis-server, the
 * raw Redis keys against distribution's schema, behaviour during a Redis outage, and the registry over a
 * counting driver (a hit costs no storage read; deletes invalidate, also across registries sharing Redis).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import { startRedis, type RunningRedis } from '../../test/helpers/redis.ts';
import { digestOf, parseDigest, type Digest } from '../spec/digest.ts';
import { OciError } from '../spec/errors.ts';
import type { RepoName, Tag } from '../spec/names.ts';
import { checkedDriver } from '../storage/checked.ts';
import type { StorageDriver } from '../storage/driver.ts';
import { inmemoryDriver } from '../storage/memory.ts';
import { type BlobDescriptorCache, CacheGuard, inmemoryDescriptorCache, redisDescriptorCache, redisKeys, throttledWarn } from './descriptor-cache.ts';
import { Registry } from './registry.ts';

const repo = (s: string): RepoName => s as RepoName;
const dg = (s: string): Digest => digestOf(Buffer.from(s));
const OCTET = 'application/octet-stream';

let redis: RunningRedis;
let raw: Redis;
before(async () => {
  redis = await startRedis();
  raw = redis.client();
});
after(async () => {
  await redis?.stop();
});

function redisCache(r: RunningRedis = redis, extra: { onError?: (err: unknown, op: string) => void; db?: number } = {}): ReturnType<typeof redisDescriptorCache> {
  return redisDescriptorCache({ host: r.host, port: r.port, connectTimeoutMs: 1_000, commandTimeoutMs: 1_000, ...extra });
}

/** The same expectations for every implementation. Each test uses its own digests, so one store serves all. */
function contract(name: string, make: () => BlobDescriptorCache): void {
  describe(`${name}: BlobDescriptorCache contract`, () => {
    let c: BlobDescriptorCache;
    before(() => {
      c = make();
    });
    after(async () => {
      await c.close();
    });

    test('unknown digests are misses, globally and in a repository', async () => {
      const d = dg(`${name}-unknown`);
      assert.equal(await c.stat(d), undefined);
      assert.equal(await c.statInRepo(repo('lib/a'), d), undefined);
    });

    test('a global descriptor is returned, but is no membership of any repository', async () => {
      const d = dg(`${name}-global`);
      await c.setDescriptor(d, { digest: d, size: 1234, mediaType: OCTET });
      assert.deepEqual(await c.stat(d), { digest: d, size: 1234, mediaType: OCTET });
      assert.equal(await c.statInRepo(repo('lib/a'), d), undefined);
    });

    test('the first global media type stays; size is replaced', async () => {
      const d = dg(`${name}-mediatype`);
      await c.setDescriptor(d, { digest: d, size: 1, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
      await c.setDescriptor(d, { digest: d, size: 2, mediaType: OCTET });
      assert.deepEqual(await c.stat(d), { digest: d, size: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    });

    test('setInRepo makes a repository hit (with its own media type) and sets the global descriptor', async () => {
      const d = dg(`${name}-inrepo`);
      await c.setInRepo(repo('lib/a'), d, { digest: d, size: 42, mediaType: OCTET });
      assert.deepEqual(await c.statInRepo(repo('lib/a'), d), { digest: d, size: 42, mediaType: OCTET });
      assert.deepEqual(await c.stat(d), { digest: d, size: 42, mediaType: OCTET });
      assert.equal(await c.statInRepo(repo('lib/b'), d), undefined, 'another repository is not a member');
      await c.setInRepo(repo('lib/b'), d, { digest: d, size: 42, mediaType: 'application/vnd.custom' });
      assert.equal((await c.statInRepo(repo('lib/b'), d))?.mediaType, 'application/vnd.custom');
      assert.equal((await c.statInRepo(repo('lib/a'), d))?.mediaType, OCTET, 'the override is per repository');
      assert.equal((await c.stat(d))?.mediaType, OCTET, 'the global media type is not overridden');
    });

    test('clearInRepo removes the membership and the global descriptor (distribution semantics)', async () => {
      const d = dg(`${name}-clearinrepo`);
      await c.setInRepo(repo('lib/a'), d, { digest: d, size: 7, mediaType: OCTET });
      await c.setInRepo(repo('lib/b'), d, { digest: d, size: 7, mediaType: OCTET });
      await c.clearInRepo(repo('lib/a'), d);
      assert.equal(await c.statInRepo(repo('lib/a'), d), undefined);
      assert.equal(await c.stat(d), undefined);
      assert.equal(await c.statInRepo(repo('lib/b'), d), undefined, 'a repository hit needs the global descriptor');
      // Describing the blob again brings back lib/b (still a member), but not lib/a.
      await c.setDescriptor(d, { digest: d, size: 7, mediaType: OCTET });
      assert.equal((await c.statInRepo(repo('lib/b'), d))?.size, 7);
      assert.equal(await c.statInRepo(repo('lib/a'), d), undefined);
      await c.clearInRepo(repo('lib/a'), d); // idempotent
    });

    test('clear removes the global descriptor, so repository lookups miss until it is set again', async () => {
      const d = dg(`${name}-clear`);
      await c.setInRepo(repo('lib/a'), d, { digest: d, size: 9, mediaType: OCTET });
      await c.clear(d);
      assert.equal(await c.stat(d), undefined);
      assert.equal(await c.statInRepo(repo('lib/a'), d), undefined);
      await c.setInRepo(repo('lib/a'), d, { digest: d, size: 9, mediaType: OCTET });
      assert.equal((await c.statInRepo(repo('lib/a'), d))?.size, 9);
    });

    test('sha512 digests and zero sizes are kept as given', async () => {
      const d = digestOf(Buffer.from(`${name}-512`), 'sha512');
      await c.setInRepo(repo('x'), d, { digest: d, size: 0, mediaType: OCTET });
      assert.deepEqual(await c.statInRepo(repo('x'), d), { digest: d, size: 0, mediaType: OCTET });
    });

    test('invalid sizes are refused', async () => {
      const d = dg(`${name}-invalid`);
      await assert.rejects(c.setDescriptor(d, { digest: d, size: -1, mediaType: OCTET }));
      await assert.rejects(c.setInRepo(repo('x'), d, { digest: d, size: 1.5, mediaType: OCTET }));
      assert.equal(await c.stat(d), undefined);
    });
  });
}

contract('inmemory', () => inmemoryDescriptorCache(1000));
contract('redis', () => redisCache());

describe('inmemory: bounded LRU', () => {
  test('holds at most `size` descriptors and memberships, evicting the least recently used', async () => {
    const c = inmemoryDescriptorCache(3);
    const ds = [0, 1, 2, 3, 4].map((i) => dg(`lru-${i}`));
    for (const d of ds.slice(0, 3)) await c.setInRepo(repo('r'), d, { digest: d, size: 1, mediaType: OCTET });
    assert.ok(await c.statInRepo(repo('r'), ds[0]!), 'touch the oldest');
    await c.setInRepo(repo('r'), ds[3]!, { digest: ds[3]!, size: 1, mediaType: OCTET });
    assert.ok(await c.statInRepo(repo('r'), ds[0]!), 'recently used survives');
    assert.equal(await c.statInRepo(repo('r'), ds[1]!), undefined, 'least recently used is evicted');
    for (let i = 0; i < 100; i++) {
      const d = dg(`lru-many-${i}`);
      await c.setInRepo(repo(`r${i}`), d, { digest: d, size: i, mediaType: OCTET });
    }
    assert.equal(c.entries, 6, 'three descriptors and three memberships');
  });

  test('a size below 1 is refused', () => {
    assert.throws(() => inmemoryDescriptorCache(0));
  });
});

describe('redis: distribution key schema', () => {
  let c: ReturnType<typeof redisDescriptorCache>;
  before(() => {
    c = redisCache();
  });
  after(async () => {
    await c.close();
  });

  test('setInRepo writes blobs::<d>, repository::<repo>::blobs and repository::<repo>::blobs::<d>, without TTLs', async () => {
    const d = dg('schema-1');
    await c.setInRepo(repo('team/app'), d, { digest: d, size: 4096, mediaType: OCTET });
    assert.deepEqual(await raw.hgetall(`blobs::${d}`), { digest: d, size: '4096', mediatype: OCTET });
    assert.equal(await raw.type('repository::team/app::blobs'), 'set');
    assert.equal(await raw.sismember('repository::team/app::blobs', d), 1);
    assert.deepEqual(await raw.hgetall(`repository::team/app::blobs::${d}`), { mediatype: OCTET });
    for (const k of [`blobs::${d}`, 'repository::team/app::blobs', `repository::team/app::blobs::${d}`]) assert.equal(await raw.ttl(k), -1, `${k} has no TTL`);
    assert.equal(redisKeys.descriptor(d), `blobs::${d}`);
  });

  test('clearInRepo removes the member, the repository hash and the global fields', async () => {
    const d = dg('schema-2');
    const other = dg('schema-2-other');
    await c.setInRepo(repo('team/app'), d, { digest: d, size: 1, mediaType: OCTET });
    await c.setInRepo(repo('team/app'), other, { digest: other, size: 1, mediaType: OCTET });
    await c.clearInRepo(repo('team/app'), d);
    assert.equal(await raw.sismember('repository::team/app::blobs', d), 0);
    assert.equal(await raw.sismember('repository::team/app::blobs', other), 1, 'other members stay');
    assert.equal(await raw.exists(`repository::team/app::blobs::${d}`), 0);
    assert.equal(await raw.exists(`blobs::${d}`), 0);
  });

  test('entries written the way distribution writes them are hits', async () => {
    const d = dg('written-by-distribution');
    // distribution: SADD; HMSET digest size; HSETNX mediatype; HSET repository mediatype.
    await raw.sadd('library/alpine'.replace(/^/, 'repository::') + '::blobs', d);
    await raw.hmset(`blobs::${d}`, 'digest', d, 'size', '31337');
    await raw.hsetnx(`blobs::${d}`, 'mediatype', 'application/vnd.oci.image.layer.v1.tar+gzip');
    await raw.hset(`repository::library/alpine::blobs::${d}`, 'mediatype', 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.deepEqual(await c.statInRepo(repo('library/alpine'), d), { digest: d, size: 31337, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
  });

  test('like distribution, an entry with the old `length` field, or no repository media type, is a miss', async () => {
    const d = dg('legacy');
    await raw.sadd('repository::old::blobs', d);
    await raw.hset(`blobs::${d}`, 'digest', d, 'length', '10', 'mediatype', OCTET);
    await raw.hset(`repository::old::blobs::${d}`, 'mediatype', OCTET);
    assert.equal(await c.stat(d), undefined);
    assert.equal(await c.statInRepo(repo('old'), d), undefined);
    const e = dg('no-repo-hash');
    await raw.sadd('repository::old::blobs', e);
    await raw.hset(`blobs::${e}`, 'digest', e, 'size', '10', 'mediatype', OCTET);
    assert.equal((await c.stat(e))?.size, 10);
    assert.equal(await c.statInRepo(repo('old'), e), undefined);
  });

  test('the configured database is used', async () => {
    const c2 = redisCache(redis, { db: 3 });
    try {
      const d = dg('db3');
      await c2.setDescriptor(d, { digest: d, size: 5, mediaType: OCTET });
      assert.equal(await raw.exists(`blobs::${d}`), 0, 'not in db 0');
      const inspect = redis.client();
      await inspect.select(3);
      assert.equal(await inspect.hget(`blobs::${d}`, 'size'), '5');
      inspect.disconnect();
    } finally {
      await c2.close();
    }
  });

  test('close leaves no connection behind, also when the cache was never used', async () => {
    const unused = redisCache();
    await unused.close();
    assert.equal(unused.client.status, 'end');
    const used = redisCache();
    await used.stat(dg('close'));
    await used.close();
    assert.equal(used.client.status, 'end');
    await assert.rejects(used.stat(dg('close')), /closed/);
  });
});

describe('redis outage', () => {
  test('operations fail fast while Redis is down, the guard answers misses and refuses to invalidate, and all recovers', async () => {
    const r = await startRedis();
    const errors: string[] = [];
    const c = redisCache(r, { onError: (_e, op) => errors.push(op) });
    const guard = new CacheGuard(c, (_e, op) => errors.push(op));
    try {
      const d = dg('outage');
      await c.setInRepo(repo('o'), d, { digest: d, size: 3, mediaType: OCTET });
      const port = r.port;
      await r.stop();
      const t0 = Date.now();
      assert.equal(await guard.statInRepo(repo('o'), d), undefined);
      assert.equal(await guard.stat(d), undefined);
      assert.equal(await guard.setInRepo(repo('o'), d, { digest: d, size: 3, mediaType: OCTET }), false);
      await assert.rejects(guard.invalidate(repo('o'), d), (e: unknown) => e instanceof OciError && e.code === 'UNAVAILABLE');
      await guard.forget(repo('o'), d);
      assert.ok(Date.now() - t0 < 1_000, `answered within the outage in ${Date.now() - t0} ms`);
      assert.ok(errors.includes('statInRepo') && errors.includes('clearInRepo'));
      // Back on the same port (empty): the client reconnects by itself.
      const again = await startRedis({ port });
      try {
        const deadline = Date.now() + 10_000;
        while (c.client.status !== 'ready' && Date.now() < deadline) await new Promise((ok) => setTimeout(ok, 50));
        await c.setInRepo(repo('o'), d, { digest: d, size: 3, mediaType: OCTET });
        assert.equal((await guard.statInRepo(repo('o'), d))?.size, 3);
      } finally {
        await c.close();
        await again.stop();
      }
    } finally {
      await c.close();
      await r.stop();
    }
  });

  test('the first use waits for the connection instead of failing', async () => {
    const c = redisCache();
    try {
      assert.equal(c.client.status, 'wait');
      const d = dg('first-use');
      await c.setInRepo(repo('f'), d, { digest: d, size: 1, mediaType: OCTET });
      assert.equal((await c.statInRepo(repo('f'), d))?.size, 1);
    } finally {
      await c.close();
    }
  });

  test('throttledWarn reports the first error, then once per interval with the count suppressed', () => {
    const seen: number[] = [];
    const warn = throttledWarn((_e, _op, suppressed) => seen.push(suppressed), 60_000);
    for (let i = 0; i < 5; i++) warn(new Error('x'), 'stat');
    assert.deepEqual(seen, [0]);
  });
});

/** A driver that counts calls, to show what a cache hit saves. */
function counting(inner: StorageDriver): StorageDriver & { calls: string[] } {
  const calls: string[] = [];
  const d = Object.create(inner) as StorageDriver & { calls: string[] };
  for (const m of ['getContent', 'putContent', 'reader', 'writer', 'stat', 'list', 'move', 'delete'] as const) {
    const f = inner[m].bind(inner) as (...a: unknown[]) => unknown;
    (d as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      calls.push(`${m} ${String(a[0])}`);
      return f(...a);
    };
  }
  d.calls = calls;
  return d;
}

async function push(r: Registry, name: RepoName, content: string): Promise<Digest> {
  const u = await r.blobs.startUpload(name);
  const pd = parseDigest(dg(content));
  await r.blobs.complete(name, u.id, pd, Readable.from([Buffer.from(content)]));
  return pd.digest;
}

for (const kind of ['inmemory', 'redis'] as const) {
  describe(`registry with the ${kind} cache`, () => {
    test('a blob HEAD after a push reads no storage; delete then stat is BLOB_UNKNOWN; re-push serves again', async () => {
      const driver = counting(checkedDriver(inmemoryDriver()));
      const cache = kind === 'redis' ? redisCache() : inmemoryDescriptorCache(100);
      const reg = new Registry({ driver, deleteEnabled: true, descriptorCache: cache });
      try {
        const name = repo(`hit/${kind}`);
        const d = await push(reg, name, `hit-${kind}`);
        driver.calls.length = 0;
        assert.equal(await reg.blobs.stat(name, d), `hit-${kind}`.length);
        assert.equal(await reg.blobs.isLinked(name, d), true);
        assert.deepEqual(driver.calls, [], 'a hit costs no storage read');
        await reg.blobs.delete(name, d);
        await assert.rejects(reg.blobs.stat(name, d), (e: unknown) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
        assert.equal(await reg.blobs.isLinked(name, d), false);
        await push(reg, name, `hit-${kind}`);
        assert.equal(await reg.blobs.stat(name, d), `hit-${kind}`.length);
      } finally {
        await reg.close();
      }
    });

    test('a miss reads storage once, then hits; mount records the target repository', async () => {
      const inner = checkedDriver(inmemoryDriver());
      const driver = counting(inner);
      const plain = new Registry({ driver: inner, deleteEnabled: true });
      const cache = kind === 'redis' ? redisCache() : inmemoryDescriptorCache(100);
      const reg = new Registry({ driver, deleteEnabled: true, descriptorCache: cache });
      try {
        const src = repo(`miss/${kind}/src`);
        const dst = repo(`miss/${kind}/dst`);
        const d = await push(plain, src, `miss-${kind}`); // written without the cache
        assert.equal(await reg.blobs.stat(src, d), `miss-${kind}`.length);
        assert.ok(driver.calls.length > 0);
        driver.calls.length = 0;
        assert.equal(await reg.blobs.stat(src, d), `miss-${kind}`.length);
        assert.deepEqual(driver.calls.slice(), []);
        assert.equal(await reg.blobs.mount(dst, d, src), `miss-${kind}`.length);
        assert.deepEqual(
          driver.calls.map((c) => c.split(' ')[0]),
          ['putContent', 'getContent'],
          'the mount writes the link and re-reads it once; source and size come from the cache',
        );
        driver.calls.length = 0;
        assert.equal(await reg.blobs.stat(dst, d), `miss-${kind}`.length);
        assert.deepEqual(driver.calls.slice(), []);
      } finally {
        await reg.close();
      }
    });
  });
}

describe('registries sharing Redis (as instances do)', () => {
  test("one instance's delete is seen by the other, also for manifests", async () => {
    const storage = checkedDriver(inmemoryDriver());
    const a = new Registry({ driver: storage, deleteEnabled: true, descriptorCache: redisCache() });
    const b = new Registry({ driver: storage, deleteEnabled: true, descriptorCache: redisCache() });
    try {
      const name = repo('shared/app');
      const d = await push(a, name, 'shared');
      assert.equal(await b.blobs.stat(name, d), 6);
      await b.blobs.delete(name, d);
      await assert.rejects(a.blobs.stat(name, d), (e: unknown) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
      assert.equal(await raw.sismember('repository::shared/app::blobs', d), 0);
      // A manifest delete invalidates a membership too (distribution records manifests in the set).
      const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));
      const put = await a.manifests.put(name, { tag: 'v1' as Tag }, m, 'application/vnd.oci.image.index.v1+json');
      assert.equal(await raw.hget(`blobs::${put.digest}`, 'size'), String(m.length), 'a stored manifest is described');
      await raw.sadd('repository::shared/app::blobs', put.digest);
      await raw.hset(`repository::shared/app::blobs::${put.digest}`, 'mediatype', 'application/vnd.oci.image.index.v1+json');
      await b.manifests.delete(name, { digest: parseDigest(put.digest) });
      assert.equal(await raw.sismember('repository::shared/app::blobs', put.digest), 0);
      await assert.rejects(a.blobs.stat(name, put.digest), (e: unknown) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a membership recorded after a concurrent delete cleared the cache is undone', async () => {
    const storage = checkedDriver(inmemoryDriver());
    // Instance A's data stat (the last read of a miss, after the link reads) waits until B's delete is done.
    let gate: Promise<void> | undefined;
    const slow = Object.create(storage) as StorageDriver;
    slow.stat = async (path, opts) => {
      if (gate && path.endsWith('/data')) await gate;
      return storage.stat(path, opts);
    };
    const a = new Registry({ driver: slow, deleteEnabled: true, descriptorCache: redisCache() });
    const b = new Registry({ driver: storage, deleteEnabled: true, descriptorCache: redisCache() });
    const c = new Registry({ driver: storage, deleteEnabled: true, descriptorCache: redisCache() });
    try {
      const name = repo('race/app');
      const d = await push(new Registry({ driver: storage, deleteEnabled: true }), name, 'race');
      let release!: () => void;
      gate = new Promise((ok) => (release = ok));
      const statting = a.blobs.stat(name, d); // reads the link (present), then waits
      await new Promise((ok) => setTimeout(ok, 50));
      await b.blobs.delete(name, d); // clears the cache, unlinks, clears again: all before A records
      release();
      assert.equal(await statting, 4, 'A answers as of before the delete');
      assert.equal(await raw.sismember('repository::race/app::blobs', d), 0, "A's late membership was undone");
      await assert.rejects(c.blobs.stat(name, d), (e: unknown) => e instanceof OciError && e.code === 'BLOB_UNKNOWN');
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  test('with Redis down, blob requests answer from storage and a delete is refused with UNAVAILABLE, changing nothing', async () => {
    const r = await startRedis();
    const storage = checkedDriver(inmemoryDriver());
    const warnings: string[] = [];
    const reg = new Registry({ driver: storage, deleteEnabled: true, descriptorCache: redisCache(r), onCacheError: (_e, op) => warnings.push(op) });
    try {
      const name = repo('down/app');
      const d = await push(reg, name, 'down');
      await r.stop();
      assert.equal(await reg.blobs.stat(name, d), 4);
      const d2 = await push(reg, name, 'pushed while down');
      assert.equal(await reg.blobs.stat(name, d2), 17);
      await assert.rejects(reg.blobs.delete(name, d), (e: unknown) => e instanceof OciError && e.code === 'UNAVAILABLE');
      assert.equal(await reg.blobs.stat(name, d), 4, 'the link is still there');
      assert.ok(warnings.includes('statInRepo') && warnings.includes('setInRepo') && warnings.includes('clearInRepo'));
    } finally {
      await reg.close();
      await r.stop();
    }
  });
});
