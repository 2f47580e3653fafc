/**
 * A blob push completes by moving the data into place and writing the repository's link side by side, so a
 * crash (or a failed move) can leave the link without the data. Such a link must name a blob that is simply
 * not there: unknown to HEAD and GET, refused as a mount source and as a manifest's layer, and a new push of
 * the blob must work as on an empty registry.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { blob, errorCode, imageManifest, pushBlob, putManifest, req } from '../helpers/oci.ts';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';

describe('a repository link whose blob data never landed', () => {
  let reg: RunningRegistry;
  const layer = blob('a layer whose push was cut off between its link and its data');
  const config = blob(JSON.stringify({ architecture: 'amd64', os: 'linux' }));

  before(async () => {
    reg = await startBerth();
    // The state a crash leaves after the link was written and before the data was renamed into place.
    const link = join(reg.root, 'docker/registry/v2/repositories/partial/app/_layers/sha256', layer.digest.slice('sha256:'.length));
    mkdirSync(link, { recursive: true });
    writeFileSync(join(link, 'link'), layer.digest);
  });
  after(async () => {
    await reg.stop();
  });

  it('is unknown to HEAD and GET', async () => {
    for (const method of ['HEAD', 'GET']) {
      const r = await req(`${reg.url}/v2/partial/app/blobs/${layer.digest}`, { method });
      assert.equal(r.status, 404, method);
      if (method === 'GET') assert.equal(errorCode(r.body), 'BLOB_UNKNOWN');
    }
  });

  it('is no mount source: the mount falls back to a new upload', async () => {
    const r = await req(`${reg.url}/v2/partial/other/blobs/uploads/?mount=${layer.digest}&from=partial/app`, { method: 'POST' });
    assert.equal(r.status, 202);
  });

  it('is refused as a layer of a manifest', async () => {
    await pushBlob(reg.url, 'partial/app', config);
    const r = await putManifest(reg.url, 'partial/app', 'v1', imageManifest(config, [layer]));
    assert.equal(r.status, 400);
    assert.equal(errorCode(r.body), 'MANIFEST_BLOB_UNKNOWN');
  });

  it('is replaced by a new push of the blob, which is then served', async () => {
    await pushBlob(reg.url, 'partial/app', layer);
    const r = await req(`${reg.url}/v2/partial/app/blobs/${layer.digest}`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, layer.data);
    assert.equal((await putManifest(reg.url, 'partial/app', 'v1', imageManifest(config, [layer]))).status, 201);
  });
});
