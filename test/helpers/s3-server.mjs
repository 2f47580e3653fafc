// Runs s3rver (an S3-protocol server from npm) on a loopback port for the tests: `node s3-server.mjs <dir> <bucket>`.
// s3rver's signature check disagrees with AWS SDK v3 on bucket-level requests (ListObjectsV2, DeleteObjects), so
// it is told to accept mismatched signatures; the SDK still signs every request as it would for AWS.
// Prints one JSON line {"port": N} once it accepts requests.
import S3rver from '@20minutes/s3rver';

const [directory, bucket] = process.argv.slice(2);
new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true, allowMismatchedSignatures: true, configureBuckets: [{ name: bucket, configs: [] }] })
  .run()
  .then(({ port }) => console.log(JSON.stringify({ port })))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
