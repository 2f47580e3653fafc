/**
 * The shared StorageDriver test suite: every driver runs it through `runDriverSuite`, and every test leaves
 * storage empty. (After distribution's registry/storage/driver/testsuites.)
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { checkedDriver } from './checked.ts';
import { InvalidPathError, PathNotFoundError, putInOrder, type StorageDriver } from './driver.ts';
import { walk } from './walk.ts';

export interface DriverSuiteOptions {
  name: string;
  create: () => Promise<StorageDriver> | StorageDriver;
  /** Called after each test to assert nothing is left (e.g. the root directory is empty). */
  isEmpty: (d: StorageDriver) => Promise<boolean>;
  /** Size of the large-stream test in bytes (default 256 MiB). */
  largeSize?: number;
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function runDriverSuite(o: DriverSuiteOptions): void {
  describe(`storage driver: ${o.name}`, () => {
    let d: StorageDriver;
    const fresh = async (): Promise<StorageDriver> => (d = checkedDriver(await o.create()));
    afterEach(async () => {
      for (const top of ['/a', '/big', '/w', '/m', '/x']) {
        await d.delete(top).catch(() => undefined);
      }
      assert.ok(await o.isEmpty(d), 'test left storage empty');
    });

    test('putContent/getContent round-trip and overwrite', async () => {
      await fresh();
      await d.putContent('/a/b/c', Buffer.from('one'));
      assert.equal((await d.getContent('/a/b/c')).toString(), 'one');
      await d.putContent('/a/b/c', Buffer.from('two!'));
      assert.equal((await d.getContent('/a/b/c')).toString(), 'two!');
      assert.equal((await d.stat('/a/b/c')).size, 4);
      assert.equal((await d.stat('/a/b')).isDir, true);
    });

    test('putInOrder puts new files and replaces old ones; a batch with an invalid path puts none', async () => {
      await fresh();
      await d.putContent('/a/old', Buffer.from('old'));
      await putInOrder(d, [
        { path: '/a/new/deep/one', data: Buffer.from('1') },
        { path: '/a/old', data: Buffer.from('replaced') },
        { path: '/a/new/two', data: Buffer.from('2') },
      ]);
      assert.equal((await d.getContent('/a/new/deep/one')).toString(), '1');
      assert.equal((await d.getContent('/a/old')).toString(), 'replaced');
      assert.equal((await d.getContent('/a/new/two')).toString(), '2');
      // The same bytes again, read just before (a driver may then skip the write): still there, still the same.
      await putInOrder(d, [{ path: '/a/old', data: Buffer.from('replaced') }]);
      assert.equal((await d.getContent('/a/old')).toString(), 'replaced');
      await assert.rejects(
        putInOrder(d, [
          { path: '/a/fine', data: Buffer.from('x') },
          { path: '/a/../escape', data: Buffer.from('x') },
        ]),
        InvalidPathError,
      );
      await assert.rejects(d.stat('/a/fine'), PathNotFoundError);
    });

    test('missing paths throw PathNotFoundError', async () => {
      await fresh();
      await assert.rejects(d.getContent('/a/none'), PathNotFoundError);
      await assert.rejects(d.stat('/a/none'), PathNotFoundError);
      await assert.rejects(d.list('/a/none'), PathNotFoundError);
      await assert.rejects(d.reader('/a/none'), PathNotFoundError);
      await assert.rejects(d.delete('/a/none'), PathNotFoundError);
      await assert.rejects(d.move('/a/none', '/a/other'), PathNotFoundError);
    });

    test('invalid paths are refused before reaching the driver', async () => {
      await fresh();
      for (const p of ['', 'a', '/a/../b', '/a/./b', '/a//b', '/a/', '/a\\b', '/a/b\0', '/a/%2e%2e', `/${'x'.repeat(2000)}`]) {
        await assert.rejects(d.putContent(p, Buffer.from('x')), InvalidPathError, p);
        await assert.rejects(d.getContent(p), InvalidPathError, p);
      }
    });

    test('reader at offsets and with an inclusive end', async () => {
      await fresh();
      await d.putContent('/a/f', Buffer.from('0123456789'));
      assert.equal((await readAll(await d.reader('/a/f', 3))).toString(), '3456789');
      assert.equal((await readAll(await d.reader('/a/f', 2, { end: 4 }))).toString(), '234');
      assert.equal((await readAll(await d.reader('/a/f', 10))).toString(), '');
    });

    test('writer: write, commit, append (resume), cancel', async () => {
      await fresh();
      const w = await d.writer('/w/data');
      await pipeline(Readable.from([Buffer.from('hello ')]), w.stream);
      await w.commit();
      assert.equal(w.size(), 6);
      const w2 = await d.writer('/w/data', { append: true });
      await pipeline(Readable.from([Buffer.from('world')]), w2.stream);
      await w2.commit();
      assert.equal(w2.size(), 11);
      assert.equal((await d.getContent('/w/data')).toString(), 'hello world');
      const w3 = await d.writer('/w/other');
      await pipeline(Readable.from([Buffer.from('gone')]), w3.stream);
      await w3.cancel();
      await assert.rejects(d.stat('/w/other'), PathNotFoundError);
    });

    test('a large stream round-trips with its digest', async () => {
      await fresh();
      const size = o.largeSize ?? 256 * 1024 * 1024;
      const block = randomBytes(1024 * 1024);
      const h = createHash('sha256');
      async function* gen(): AsyncGenerator<Buffer> {
        for (let i = 0; i < size / block.length; i++) {
          h.update(block);
          yield block;
        }
      }
      const w = await d.writer('/big/blob');
      await pipeline(Readable.from(gen()), w.stream);
      await w.commit();
      assert.equal((await d.stat('/big/blob')).size, size);
      const h2 = createHash('sha256');
      for await (const c of await d.reader('/big/blob')) h2.update(c as Buffer);
      assert.equal(h2.digest('hex'), h.digest('hex'));
    });

    test('a writer hands each chunk back once stored, in order, and waits for the callee (onWritten)', async () => {
      await fresh();
      // Fresh 64 KiB chunks, each the whole of its ArrayBuffer, as Node's HTTP parser hands a request body over.
      const chunks = Array.from({ length: 48 }, () => Buffer.from(randomBytes(64 * 1024)));
      const want = createHash('sha256');
      for (const c of chunks) want.update(c);
      const handed = createHash('sha256');
      let handedBytes = 0;
      let held = 0;
      let pending = false;
      const w = await d.writer('/w/given', {
        onWritten: async (batch) => {
          assert.equal(pending, false, 'no chunks handed back while the callee holds the writer');
          for (const c of batch) {
            handed.update(c);
            handedBytes += c.length;
            // The callee owns them now: wiping them must not change what was stored.
            c.fill(0);
          }
          pending = true;
          held++;
          await new Promise((r) => setTimeout(r, 1));
          pending = false;
        },
      });
      await pipeline(Readable.from(chunks), w.stream);
      await w.commit();
      assert.ok(held > 0);
      assert.equal(handedBytes, 48 * 64 * 1024, 'every chunk handed back once');
      const wanted = want.digest('hex');
      assert.equal(handed.digest('hex'), wanted, 'handed back in the order written');
      assert.equal(createHash('sha256').update(await readAll(await d.reader('/w/given'))).digest('hex'), wanted, 'every byte stored');
      assert.equal((await d.stat('/w/given')).size, 48 * 64 * 1024);
    });

    test('move replaces the destination and creates parents', async () => {
      await fresh();
      await d.putContent('/m/src', Buffer.from('new'));
      await d.putContent('/m/x/y/dst', Buffer.from('old'));
      await d.move('/m/src', '/m/x/y/dst');
      assert.equal((await d.getContent('/m/x/y/dst')).toString(), 'new');
      await assert.rejects(d.stat('/m/src'), PathNotFoundError);
      await d.move('/m/x/y/dst', '/m/deep/er/file');
      assert.equal((await d.getContent('/m/deep/er/file')).toString(), 'new');
    });

    test('list gives direct children; delete removes only the subtree', async () => {
      await fresh();
      await d.putContent('/x/a/1', Buffer.from('1'));
      await d.putContent('/x/a/2', Buffer.from('2'));
      await d.putContent('/x/ab/3', Buffer.from('3'));
      await d.putContent('/x/b', Buffer.from('b'));
      await d.putContent('/x/deep/er/than/one/level', Buffer.from('d'));
      assert.deepEqual((await d.list('/x')).sort(), ['a', 'ab', 'b', 'deep']);
      assert.deepEqual(await d.list('/x/deep'), ['er']);
      assert.deepEqual((await d.list('/x/a')).sort(), ['1', '2']);
      await d.delete('/x/a');
      assert.deepEqual((await d.list('/x')).sort(), ['ab', 'b', 'deep']);
      assert.equal((await d.getContent('/x/ab/3')).toString(), '3');
    });

    test('list and delete span more than one page of an object store listing (1000)', async () => {
      await fresh();
      const names = Array.from({ length: 1100 }, (_, i) => `f${String(i).padStart(4, '0')}`);
      for (let i = 0; i < names.length; i += 50) await Promise.all(names.slice(i, i + 50).map((n) => d.putContent(`/x/many/${n}`, Buffer.from(n))));
      assert.deepEqual((await d.list('/x/many')).sort(), names);
      await d.delete('/x/many');
      await assert.rejects(d.list('/x/many'), PathNotFoundError);
    });

    test('concurrent writers to different files do not interfere', async () => {
      await fresh();
      await Promise.all(
        Array.from({ length: 16 }, async (_, i) => {
          const w = await d.writer(`/w/f${i}`);
          await pipeline(Readable.from([Buffer.alloc(100_000, i)]), w.stream);
          await w.commit();
        }),
      );
      for (let i = 0; i < 16; i++) assert.deepEqual(await d.getContent(`/w/f${i}`), Buffer.alloc(100_000, i));
    });

    test('many resumed writes of mixed sizes read back as one file, at any offset, and move into one', async () => {
      await fresh();
      // Sizes around S3's 5 MiB part minimum, empty appends included.
      const sizes = [3, 0, 6 * 1024 * 1024 + 7, 1024, 5 * 1024 * 1024, 0, 11 * 1024 * 1024 + 1, 2];
      const parts = sizes.map((n, i) => Buffer.alloc(n, i + 1).fill(`part${i}`, 0, Math.min(n, 5)));
      const whole = Buffer.concat(parts);
      await d.putContent('/w/up/data', Buffer.alloc(0));
      let size = 0;
      for (const p of parts) {
        const w = await d.writer('/w/up/data', { append: true });
        assert.equal(w.size(), size, 'size() at open is the file size');
        await pipeline(Readable.from([p.subarray(0, p.length >> 1), p.subarray(p.length >> 1)].filter((b) => b.length > 0)), w.stream);
        await w.commit();
        size += p.length;
        assert.equal(w.size(), size);
        assert.equal((await d.stat('/w/up/data')).size, size);
      }
      assert.deepEqual(await d.list('/w/up'), ['data']);
      for (const [start, end] of [[0, 9], [1, 6 * 1024 * 1024 + 20], [6 * 1024 * 1024 + 5, whole.length - 1], [whole.length - 3, whole.length + 100]] as const) {
        const got = await readAll(await d.reader('/w/up/data', start, { end }));
        assert.ok(got.equals(whole.subarray(start, end + 1)), `range ${start}-${end}`);
      }
      await d.move('/w/up/data', '/w/blob/data');
      await assert.rejects(d.stat('/w/up/data'), PathNotFoundError);
      assert.equal(createHash('sha256').update(await readAll(await d.reader('/w/blob/data'))).digest('hex'), createHash('sha256').update(whole).digest('hex'));
      assert.equal((await d.stat('/w/blob/data')).size, whole.length);
      // putContent over a file that grew by appends replaces all of it.
      const w = await d.writer('/w/blob/data', { append: true });
      await pipeline(Readable.from([Buffer.from('tail')]), w.stream);
      await w.commit();
      await d.putContent('/w/blob/data', Buffer.from('fresh'));
      assert.equal((await d.getContent('/w/blob/data')).toString(), 'fresh');
    });

    test('a writer whose input breaks keeps a valid prefix on close, and the file can be resumed', async () => {
      await fresh();
      const w = await d.writer('/w/broken', { append: true });
      async function* failing(): AsyncGenerator<Buffer> {
        yield Buffer.alloc(6 * 1024 * 1024, 7);
        yield Buffer.alloc(1000, 8);
        throw new Error('client went away');
      }
      await assert.rejects(pipeline(Readable.from(failing()), w.stream), /client went away/);
      await w.close();
      const kept = (await d.stat('/w/broken')).size;
      assert.ok(kept <= 6 * 1024 * 1024 + 1000, `kept ${kept}`);
      assert.equal(w.size(), kept);
      const expected = Buffer.concat([Buffer.alloc(Math.min(kept, 6 * 1024 * 1024), 7), Buffer.alloc(Math.max(kept - 6 * 1024 * 1024, 0), 8)]);
      assert.ok((await readAll(await d.reader('/w/broken'))).equals(expected));
      const w2 = await d.writer('/w/broken', { append: true });
      await pipeline(Readable.from([Buffer.from('more')]), w2.stream);
      await w2.commit();
      assert.equal((await d.stat('/w/broken')).size, kept + 4);
      assert.equal((await readAll(await d.reader('/w/broken', kept))).toString(), 'more');
    });

    test('discard cuts an append back to its size at open, committed or not, and removes a new file', async () => {
      await fresh();
      await d.putContent('/w/dis/data', Buffer.from('acked'));
      const w = await d.writer('/w/dis/data', { append: true });
      await pipeline(Readable.from([Buffer.alloc(3 * 1024 * 1024, 1)]), w.stream);
      await w.discard();
      assert.equal((await d.stat('/w/dis/data')).size, 5);
      const w2 = await d.writer('/w/dis/data', { append: true });
      await pipeline(Readable.from([Buffer.from('-more')]), w2.stream);
      await w2.commit();
      await w2.discard();
      assert.equal((await d.getContent('/w/dis/data')).toString(), 'acked');
      const w3 = await d.writer('/w/dis/data', { append: true });
      await pipeline(Readable.from([Buffer.from('+ok')]), w3.stream);
      await w3.commit();
      assert.equal((await d.getContent('/w/dis/data')).toString(), 'acked+ok');
      const w4 = await d.writer('/w/dis/new');
      await pipeline(Readable.from([Buffer.from('x')]), w4.stream);
      await w4.discard();
      await assert.rejects(d.stat('/w/dis/new'), PathNotFoundError);
      await d.delete('/w').catch(() => undefined);
    });

    test('cancel removes a file that grew by appends', async () => {
      await fresh();
      await d.putContent('/w/c/data', Buffer.from('start'));
      const w = await d.writer('/w/c/data', { append: true });
      await pipeline(Readable.from([Buffer.alloc(100, 1)]), w.stream);
      await w.cancel();
      await assert.rejects(d.stat('/w/c/data'), PathNotFoundError);
      await d.delete('/w').catch(() => undefined);
    });

    test('walk visits every entry in byte order, directories before their contents', async () => {
      await fresh();
      for (const p of ['/x/b/2', '/x/a/1', '/x/a-/3', '/x/A', '/x/a/0/deep', '/x/c']) await d.putContent(p, Buffer.from(p));
      const seen: string[] = [];
      for await (const e of walk(d, '/x')) seen.push(`${e.path}${e.isDir ? '/' : ''}`);
      assert.deepEqual(seen, ['/x/A', '/x/a/', '/x/a/0/', '/x/a/0/deep', '/x/a/1', '/x/a-/', '/x/a-/3', '/x/b/', '/x/b/2', '/x/c']);
      const pruned: string[] = [];
      for await (const e of walk(d, '/x', (i) => i.path === '/x/a')) pruned.push(e.path);
      assert.ok(!pruned.includes('/x/a/1') && pruned.includes('/x/a'));
    });
  });
}
