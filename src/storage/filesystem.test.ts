import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TMP_DIR, filesystemDriver } from './filesystem.ts';
import { PathNotFoundError } from './driver.ts';

test('filesystem: temporary files never sit beside their target; ones a crash left behind are swept when old', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
  try {
    const tmp = join(root, TMP_DIR);
    mkdirSync(tmp);
    const stale = join(tmp, 'left-by-a-crash');
    const recent = join(tmp, 'another-instance-writing');
    writeFileSync(stale, 'x');
    writeFileSync(recent, 'y');
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(stale, hourAgo, hourAgo);
    const d = filesystemDriver({ rootdirectory: root });
    await d.putContent('/docker/registry/v2/repositories/a/_manifests/tags/t/current/link', Buffer.from('sha256:x'));
    assert.deepEqual(readdirSync(join(root, 'docker/registry/v2/repositories/a/_manifests/tags/t/current')), ['link']);
    for (let i = 0; i < 100 && existsSync(stale); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(!existsSync(stale), 'a stale temporary file is removed');
    assert.ok(existsSync(recent), 'a recent one may belong to another instance and stays');
    // The directory is made again if someone removes it.
    rmSync(tmp, { recursive: true });
    await d.putContent('/x', Buffer.from('again'));
    assert.equal((await d.getContent('/x')).toString(), 'again');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('filesystem: coalesced lookups share a stat but never one taken before they asked', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
  try {
    const d = filesystemDriver({ rootdirectory: root, fsync: false });
    const link = '/docker/registry/v2/repositories/a/_manifests/tags/t/current/link';
    const file = join(root, link);
    await d.putContent(link, Buffer.from('sha256:one'));
    // A burst asked in one turn of the event loop is answered alike, from one stat and the cache.
    const burst = await Promise.all(Array.from({ length: 50 }, () => d.getContent(link)));
    assert.ok(burst.every((b) => b.toString() === 'sha256:one'));
    assert.equal(new Set(burst).size, 1, 'one cached buffer for all');
    // Changed behind the driver's back (another instance): in place, by a new inode, and removed. Each lookup
    // made after the change sees it, although the cache held the old bytes and a round was pending.
    for (const [change, want] of [
      [() => writeFileSync(file, 'sha256:two-in-place'), 'sha256:two-in-place'],
      [() => (writeFileSync(`${file}.new`, 'sha256:three'), renameSync(`${file}.new`, file)), 'sha256:three'],
    ] as const) {
      const before = d.getContent(link);
      change();
      const after = await Promise.all([d.getContent(link), d.getContent(link)]);
      assert.ok(['sha256:one', 'sha256:two-in-place', want].includes((await before).toString()));
      for (const b of after) assert.equal(b.toString(), want);
      assert.equal((await d.getContent(link)).toString(), want);
    }
    const pending = d.getContent(link);
    rmSync(file);
    await assert.rejects(d.getContent(link), PathNotFoundError);
    await pending.catch(() => undefined);
    await assert.rejects(d.stat(link), PathNotFoundError);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Whether this process holds `file` open with O_DIRECT (Linux: the flags in /proc/self/fdinfo, octal). */
function openDirect(file: string): boolean {
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== file) continue;
    const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (flags && (parseInt(flags[1]!, 8) & constants.O_DIRECT) !== 0) return true;
  }
  return false;
}

/** Chunks of awkward sizes (never block-aligned), `total` bytes in all, from a seeded pattern. */
function oddChunks(total: number, seed: number): Buffer[] {
  const out: Buffer[] = [];
  for (let left = total, k = seed; left > 0; k++) {
    const n = Math.min(left, 1 + ((k * 7919 + 4093) % 300_000));
    out.push(Buffer.from(randomBytes(n)));
    left -= n;
  }
  return out;
}

test('filesystem: uploads go straight to the device (those announced below a slab through the page cache) and read back byte for byte', { skip: existsSync('/proc/self/fdinfo') ? false : 'needs /proc/self/fdinfo (Linux) to see which descriptors are O_DIRECT' }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-direct-'));
  try {
    // tmpfs refuses O_DIRECT: the writers then go through the page cache, and everything below still holds.
    const direct = await takesDirect(root);
    const d = filesystemDriver({ rootdirectory: root });
    const file = join(root, 'up/data');
    const want = createHash('sha256');
    let size = 0;
    const append = async (chunks: Buffer[], expectDirect: boolean, expectedBytes?: number): Promise<void> => {
      const w = await d.writer('/up/data', { append: true, expectedBytes });
      assert.equal(openDirect(file), direct && expectDirect, `O_DIRECT at ${size} bytes`);
      await pipeline(Readable.from(chunks), w.stream);
      await w.commit();
      for (const c of chunks) {
        want.update(c);
        size += c.length;
      }
      assert.equal(w.size(), size);
    };
    // A small fresh upload announced as such through the page cache; then appends starting inside a block,
    // across many slabs (filled while writes are in flight, so written several in one call, and flushed on the
    // way), of whole blocks only, of one byte; and a small one announced again.
    await append(oddChunks(5_000, 1), false, 5_000);
    await append(oddChunks(11 * 1024 * 1024 + 17, 2), true);
    await append(oddChunks(4096 * 3, 3), true, 4096 * 3 * 100);
    await append(oddChunks(1, 4), true);
    await append(oddChunks(70_000, 8), false, 70_000);
    assert.equal((await d.stat('/up/data')).size, size);
    const got = createHash('sha256');
    for await (const c of await d.reader('/up/data')) got.update(c as Buffer);
    assert.equal(got.digest('hex'), want.digest('hex'));

    // Two fresh uploads at once, both direct (the first takes more slabs). Both read back whole.
    const a = await d.writer('/a/data', { append: true });
    const b = await d.writer('/b/data', { append: true });
    assert.equal(openDirect(join(root, 'a/data')), direct);
    assert.equal(openDirect(join(root, 'b/data')), direct);
    const ca = oddChunks(2 * 1024 * 1024 + 3, 5);
    const cb = oddChunks(1024 * 1024 - 5, 6);
    await Promise.all([pipeline(Readable.from(ca), a.stream), pipeline(Readable.from(cb), b.stream)]);
    await Promise.all([a.commit(), b.commit()]);
    assert.deepEqual(await d.getContent('/a/data', { maxSize: 8 << 20 }), Buffer.concat(ca));
    assert.deepEqual(await d.getContent('/b/data', { maxSize: 8 << 20 }), Buffer.concat(cb));

    // A client gone mid-upload (the writer closed, its stream never ended): the file holds a prefix of what was
    // sent, its size says how long, and the upload continues from there.
    const sent = oddChunks(3 * 1024 * 1024, 7);
    const c = await d.writer('/up/data', { append: true });
    assert.equal(openDirect(file), direct);
    for (const chunk of sent.slice(0, sent.length - 2)) await new Promise<void>((r, j) => c.stream.write(chunk, (e) => (e ? j(e) : r())));
    await c.close();
    const kept = (await d.stat('/up/data')).size - size;
    const whole = Buffer.concat(sent);
    assert.ok(kept >= 0 && kept < whole.length, `kept ${kept}`);
    const rest = whole.subarray(kept);
    const r = await d.writer('/up/data', { append: true });
    await pipeline(Readable.from([rest]), r.stream);
    await r.commit();
    const all = await d.getContent('/up/data', { maxSize: 16 << 20 });
    assert.equal(all.length, size + whole.length);
    assert.deepEqual(all.subarray(size), whole);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Whether the file system under `dir` takes O_DIRECT. */
async function takesDirect(dir: string): Promise<boolean> {
  const probe = join(dir, 'probe');
  writeFileSync(probe, '');
  try {
    await (await open(probe, constants.O_RDONLY | constants.O_DIRECT)).close();
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe);
  }
}

test('filesystem: putContents publishes in order, and a failure leaves nothing after it: no file, no new directory, no temporary file', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
  try {
    const d = filesystemDriver({ rootdirectory: root });
    const repo = '/docker/registry/v2/repositories/r/_manifests';
    const files = [
      { path: `${repo}/revisions/sha256/aa/link`, data: Buffer.from('sha256:aa') },
      { path: `${repo}/tags/t/index/sha256/aa/link`, data: Buffer.from('sha256:aa') },
      { path: `${repo}/tags/t/current/link`, data: Buffer.from('sha256:aa') },
    ];
    await d.putContents!(files);
    for (const f of files) assert.equal(readFileSync(join(root, f.path), 'utf8'), 'sha256:aa');
    // The second file cannot be made (a file stands where its directory would be): none is put, and the
    // directories made for the others are taken back.
    writeFileSync(join(root, repo, 'tags/blocked'), 'a file');
    const failing = [
      { path: `${repo}/revisions/sha256/bb/link`, data: Buffer.from('sha256:bb') },
      { path: `${repo}/tags/blocked/index/sha256/bb/link`, data: Buffer.from('sha256:bb') },
      { path: `${repo}/tags/u/index/sha256/bb/link`, data: Buffer.from('sha256:bb') },
      { path: `${repo}/tags/u/current/link`, data: Buffer.from('sha256:bb') },
    ];
    await assert.rejects(d.putContents!(failing));
    assert.deepEqual(readdirSync(join(root, repo, 'tags')).sort(), ['blocked', 't'], 'no tag directory left by the failed put');
    assert.deepEqual(readdirSync(join(root, repo, 'revisions/sha256')), ['aa']);
    assert.deepEqual(readdirSync(join(root, TMP_DIR)), [], 'no temporary file left');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('filesystem: putting the bytes a file already holds (its cached copy current) keeps the file; other bytes replace it', async () => {
  const root = mkdtempSync(join(tmpdir(), 'berth-fs-'));
  try {
    const d = filesystemDriver({ rootdirectory: root });
    const link = '/docker/registry/v2/repositories/r/_manifests/revisions/sha256/aa/link';
    const inode = (): number => statSync(join(root, link)).ino;
    await d.putContent(link, Buffer.from('sha256:aa'));
    const first = inode();
    // Not read yet, so not known to hold the bytes: written again.
    await d.putContent(link, Buffer.from('sha256:aa'));
    assert.notEqual(inode(), first);
    const second = inode();
    assert.equal((await d.getContent(link)).toString(), 'sha256:aa');
    await d.putContent(link, Buffer.from('sha256:aa'));
    assert.equal(inode(), second, 'the same bytes again: no new file');
    await d.putContents!([{ path: link, data: Buffer.from('sha256:aa') }]);
    assert.equal(inode(), second);
    await d.putContent(link, Buffer.from('sha256:ab'));
    assert.notEqual(inode(), second, 'other bytes: a new file');
    assert.equal((await d.getContent(link)).toString(), 'sha256:ab');
    // Changed behind the driver's back to the bytes it is then given: the stat sees the new version, the cache
    // does not hold it, so it is written (never skipped on a stale cached copy).
    writeFileSync(join(root, link), 'sha256:ac');
    await d.putContent(link, Buffer.from('sha256:ab'));
    assert.equal(readFileSync(join(root, link), 'utf8'), 'sha256:ab');
    assert.deepEqual(readdirSync(join(root, TMP_DIR)), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
