import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { rmSync } from 'node:fs';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startS3, type RunningS3 } from '../../test/helpers/servers.ts';
import { runDriverSuite } from './driver-suite.ts';
import { TMP_DIR, filesystemDriver } from './filesystem.ts';
import { inmemoryDriver } from './memory.ts';
import { s3Driver } from './s3.ts';

const root = mkdtempSync(join(tmpdir(), 'berth-driver-'));
after(() => rmSync(root, { recursive: true, force: true }));

runDriverSuite({
  name: 'filesystem',
  create: () => filesystemDriver({ rootdirectory: root }),
  // Only the (empty) directory for temporary files may remain: nothing leaks into it.
  isEmpty: async () => readdirSync(root).every((e) => `/${e}` === TMP_DIR && readdirSync(join(root, e)).length === 0),
});

runDriverSuite({
  name: 'inmemory',
  create: () => inmemoryDriver(),
  isEmpty: async (d) => d.list('/').then(
    (l) => l.length === 0,
    () => true,
  ),
});

let s3: RunningS3;
before(async () => {
  s3 = await startS3();
});
after(async () => s3?.stop());
runDriverSuite({
  name: 's3 (against s3rver)',
  // A small part size so that multipart uploads, segment composition and the 5 MiB rule are all exercised.
  create: () =>
    s3Driver({ bucket: s3.bucket, region: 'us-east-1', regionendpoint: s3.endpoint, forcepathstyle: true, accesskey: s3.accesskey, secretkey: s3.secretkey, rootdirectory: '/suite', chunksize: 5 * 1024 * 1024 }),
  // Every object in the bucket, not only under the root: nothing may leak outside it either.
  isEmpty: async () => {
    const c = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accesskey, secretAccessKey: s3.secretkey } });
    const r = await c.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    c.destroy();
    return (r.KeyCount ?? 0) === 0;
  },
});
