import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TMP_DIR, filesystemDriver } from './filesystem.ts';

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
