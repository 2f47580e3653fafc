import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerCredentials } from './credentials.ts';

test('Docker Hub logins stored by docker under https://index.docker.io/v1/ are found for docker.io and registry-1.docker.io', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-creds-'));
  try {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from('hubuser:hubpass').toString('base64') } } }));
    for (const host of ['docker.io', 'registry-1.docker.io', 'index.docker.io']) {
      assert.deepEqual(await dockerCredentials(host, { dockerConfig: file, env: {} }), { username: 'hubuser', password: 'hubpass' }, host);
    }
    assert.equal(await dockerCredentials('ghcr.io', { dockerConfig: file, env: {} }), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
