// Runs s3rver (an S3-protocol server from npm) on a loopback port for the tests: `node s3-server.mjs <dir> <bucket>`.
// Prints one JSON line {"port": N} once it accepts requests.
//
// Two defects of s3rver 4.0.4 are worked around here, not in Berth:
// - its signature check disagrees with AWS SDK v3 on bucket-level requests (ListObjectsV2, DeleteObjects), so it
//   is told to accept mismatched signatures; the SDK still signs every request as it would for AWS;
// - its delimiter listing skips objects more than two levels below the prefix, so `repositories/` would not show
//   `team/` for `team/app/_manifests/...`; the filesystem store's listObjects is replaced by one that walks the
//   whole intersecting subtree, sorts keys as S3 does, and groups them by the delimiter.
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import S3rver from '@20minutes/s3rver';

const load = createRequire(import.meta.url);
const FilesystemStore = load('@20minutes/s3rver/lib/stores/filesystem.js');
const S3Object = load('@20minutes/s3rver/lib/models/object.js');
const OBJECT_SUFFIX = '._S3rver_object';

FilesystemStore.prototype.listObjects = async function listObjects(bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const keys = [];
  const visit = (dir, rel) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        const asDir = `${name}/`;
        if (asDir.startsWith(prefix) || prefix.startsWith(asDir)) visit(join(dir, e.name), name);
      } else if (e.name.endsWith(OBJECT_SUFFIX)) {
        keys.push(name.slice(0, -OBJECT_SUFFIX.length));
      }
    }
  };
  visit(this.getBucketPath(bucket), '');
  keys.sort((a, b) => (Buffer.from(a) < Buffer.from(b) ? -1 : 1));
  const objects = [];
  const commonPrefixes = new Set();
  let isTruncated = false;
  for (const key of keys) {
    if (key <= startAfter || !key.startsWith(prefix)) continue;
    const idx = delimiter ? key.slice(prefix.length).indexOf(delimiter) : -1;
    if (idx !== -1) {
      commonPrefixes.add(key.slice(0, prefix.length + idx + 1));
      continue;
    }
    if (objects.length >= maxKeys) {
      isTruncated = true;
      break;
    }
    objects.push(key);
  }
  const metadata = await Promise.all(objects.map((k) => this.getMetadata(bucket, k).catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e)))));
  return {
    objects: objects.map((k, i) => (metadata[i] ? new S3Object(bucket, k, null, metadata[i]) : undefined)).filter(Boolean),
    commonPrefixes: [...commonPrefixes].sort(),
    isTruncated,
  };
};

const [directory, bucket] = process.argv.slice(2);
new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true, allowMismatchedSignatures: true, configureBuckets: [{ name: bucket, configs: [] }] })
  .run()
  .then(({ port }) => console.log(JSON.stringify({ port })))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
