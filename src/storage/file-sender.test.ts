import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, read, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { sendFileRange } from './file-sender.ts';

const MiB = 1024 * 1024;

/** A slow destination (each write taken after `delayMs`) that records what it got and its peak backlog. */
function slowSink(delayMs: number): { dest: Writable; got: Buffer[]; peakBacklog: () => number } {
  const got: Buffer[] = [];
  let peak = 0;
  const dest = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      setTimeout(cb, delayMs);
    },
  });
  const write = dest.write.bind(dest) as (c: Buffer, cb?: (e?: Error | null) => void) => boolean;
  dest.write = ((c: Buffer, cb?: (e?: Error | null) => void) => {
    const r = write(c, cb);
    peak = Math.max(peak, dest.writableLength);
    return r;
  }) as Writable['write'];
  return { dest, got, peakBacklog: () => peak };
}

function withFile(size: number, run: (fd: number, data: Buffer) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sender-'));
  const data = randomBytes(size);
  const file = join(dir, 'blob');
  writeFileSync(file, data);
  return run(openSync(file, 'r'), data).finally(() => rmSync(dir, { recursive: true, force: true }));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('sendFileRange: a slow destination gets every byte, with reads overlapping writes but at most 3 MiB queued', async () => {
  await withFile(8 * MiB + 123, async (fd, data) => {
    const s = slowSink(5);
    await sendFileRange(fd, 0, data.length - 1, s.dest);
    assert.equal(sha(Buffer.concat(s.got)), sha(data));
    // More than one buffer queued at once: the next read did not wait for the previous write to drain.
    assert.ok(s.peakBacklog() > MiB, `peak backlog ${s.peakBacklog()} bytes`);
    // The transfer's three buffers are the bound, however slow the destination.
    assert.ok(s.peakBacklog() <= 3 * MiB, `peak backlog ${s.peakBacklog()} bytes`);
  });
});

test('sendFileRange: a range sends exactly its bytes', async () => {
  await withFile(5 * MiB, async (fd, data) => {
    const s = slowSink(0);
    await sendFileRange(fd, 1000, 3 * MiB + 7, s.dest);
    assert.equal(sha(Buffer.concat(s.got)), sha(data.subarray(1000, 3 * MiB + 8)));
  });
});

test('sendFileRange: a destination closed early rejects with a premature close', async () => {
  await withFile(16 * MiB, async (fd) => {
    const s = slowSink(5);
    const sent = sendFileRange(fd, 0, 16 * MiB - 1, s.dest);
    setTimeout(() => s.dest.destroy(), 20);
    await assert.rejects(sent, (e: NodeJS.ErrnoException) => e.code === 'ERR_STREAM_PREMATURE_CLOSE');
  });
});

test('sendFileRange: reads that finish out of order are written in file order', async () => {
  await withFile(6 * MiB + 7, async (fd, data) => {
    // Every other read is held back 30 ms, so the read after it finishes first.
    let n = 0;
    const slowEveryOther = ((...args: Parameters<typeof read>) => {
      const delay = n++ % 2 === 0 ? 30 : 0;
      setTimeout(() => (read as (...a: unknown[]) => void)(...args), delay);
    }) as typeof read;
    const s = slowSink(0);
    await sendFileRange(fd, 3, data.length - 1, s.dest, slowEveryOther);
    assert.ok(n >= 6, `${n} reads`);
    assert.equal(sha(Buffer.concat(s.got)), sha(data.subarray(3)));
  });
});

test('sendFileRange: transfers cut off with reads and writes pending give their buffers back to the pool', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-sender-cut-'));
  try {
    const data = randomBytes(16 * MiB);
    const file = join(dir, 'blob');
    writeFileSync(file, data);
    // More cut-off transfers than the pool has buffers for (12 buffers, 3 per transfer).
    for (let i = 0; i < 6; i++) {
      const s = slowSink(5);
      const sent = sendFileRange(openSync(file, 'r'), 0, data.length - 1, s.dest);
      setTimeout(() => s.dest.destroy(), 12);
      await assert.rejects(sent, (e: NodeJS.ErrnoException) => e.code === 'ERR_STREAM_PREMATURE_CLOSE');
      await new Promise((r) => setTimeout(r, 30));
    }
    // A transfer after them still has its three pooled buffers: more than one queued at once.
    const s = slowSink(5);
    await sendFileRange(openSync(file, 'r'), 0, 8 * MiB - 1, s.dest);
    assert.equal(sha(Buffer.concat(s.got)), sha(data.subarray(0, 8 * MiB)));
    assert.ok(s.peakBacklog() > MiB, `peak backlog ${s.peakBacklog()} bytes: the pool lost its buffers`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
