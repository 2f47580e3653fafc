import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { rmSync } from 'node:fs';
import { runDriverSuite } from './driver-suite.ts';
import { filesystemDriver } from './filesystem.ts';
import { inmemoryDriver } from './memory.ts';

const root = mkdtempSync(join(tmpdir(), 'berth-driver-'));
after(() => rmSync(root, { recursive: true, force: true }));

runDriverSuite({
  name: 'filesystem',
  create: () => filesystemDriver({ rootdirectory: root }),
  isEmpty: async () => readdirSync(root).length === 0,
});

runDriverSuite({
  name: 'inmemory',
  create: () => inmemoryDriver(),
  isEmpty: async (d) => d.list('/').then(
    (l) => l.length === 0,
    () => true,
  ),
});
