import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
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
