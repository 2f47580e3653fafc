/** Server behaviour over real HTTP: read-only, deletes disabled, prefix, restarts, draining, purging, logs, TLS. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, startBerth } from '../helpers/servers.ts';
import { blob, errorCode, pushBlob, pushImage, req, sha256 } from '../helpers/oci.ts';

describe('server behaviour', () => {
  test('read-only mode serves pulls and rejects every write with 405 UNSUPPORTED', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-ro-'));
    const root = join(tmp, 'data');
    let reg = await startBerth({ root });
    const img = await pushImage(reg.url, 'ro/repo', 'v1');
    await reg.stop();
    reg = await startBerth({ root, readonly: true });
    try {
      assert.equal((await req(`${reg.url}/v2/ro/repo/manifests/v1`)).status, 200);
      assert.equal((await req(`${reg.url}/v2/ro/repo/blobs/${img.layer.digest}`)).status, 200);
      const post = await req(`${reg.url}/v2/ro/repo/blobs/uploads/`, { method: 'POST' });
      assert.equal(post.status, 405);
      assert.equal(errorCode(post.body), 'UNSUPPORTED');
      const put = await req(`${reg.url}/v2/ro/repo/manifests/v2`, { method: 'PUT', body: img.body, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(put.status, 405);
      assert.equal((await req(`${reg.url}/v2/ro/repo/manifests/v1`, { method: 'DELETE' })).status, 405);
    } finally {
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('end-9/end-10: with deletes disabled, DELETE is 405 UNSUPPORTED', async () => {
    const reg = await startBerth({ deleteEnabled: false });
    try {
      const img = await pushImage(reg.url, 'nodel/repo', 'v1');
      const r = await req(`${reg.url}/v2/nodel/repo/manifests/${img.digest}`, { method: 'DELETE' });
      assert.equal(r.status, 405);
      assert.equal(errorCode(r.body), 'UNSUPPORTED');
      assert.equal((await req(`${reg.url}/v2/nodel/repo/blobs/${img.layer.digest}`, { method: 'DELETE' })).status, 405);
      assert.equal((await req(`${reg.url}/v2/nodel/repo/manifests/v1`)).status, 200);
    } finally {
      await reg.stop();
    }
  });

  test('http.prefix mounts the API under a path, Location URLs included', async () => {
    const reg = await startBerth({ env: { REGISTRY_HTTP_PREFIX: '/registry' } });
    try {
      assert.equal((await req(`${reg.url}/registry/v2/`)).status, 200);
      assert.equal((await req(`${reg.url}/v2/`)).status, 404);
      const r = await req(`${reg.url}/registry/v2/p/blobs/uploads/`, { method: 'POST' });
      assert.equal(r.status, 202);
      assert.match(r.headers.get('location')!, /^http:\/\/127\.0\.0\.1:\d+\/registry\/v2\/p\/blobs\/uploads\//);
    } finally {
      await reg.stop();
    }
  });

  test('http.headers are added to every response; REGISTRY_* overrides apply', async () => {
    const reg = await startBerth({ extraYaml: 'catalog:\n  maxentries: 7\n', env: { REGISTRY_HTTP_HEADERS: '{"X-Content-Type-Options": ["nosniff"]}', REGISTRY_CATALOG_MAXENTRIES: '3' } });
    try {
      const r = await req(`${reg.url}/v2/`);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      assert.equal((await req(`${reg.url}/v2/_catalog?n=4`)).status, 400, 'maxentries overridden to 3');
    } finally {
      await reg.stop();
    }
  });

  test('an upload survives a restart and resumes from its acknowledged offset', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-restart-'));
    const root = join(tmp, 'data');
    const data = Buffer.alloc(1_000_000, 9);
    data.write('unique content for restart', 0);
    const b = blob(data);
    let reg = await startBerth({ root });
    const start = await req(`${reg.url}/v2/resume/repo/blobs/uploads/`, { method: 'POST' });
    const p1 = await req(new URL(start.headers.get('location')!).toString(), { method: 'PATCH', body: data.subarray(0, 400_000), headers: { 'Content-Range': '0-399999' } });
    assert.equal(p1.status, 202);
    const loc = new URL(p1.headers.get('location')!);
    await reg.stop({ keep: true });
    reg = await startBerth({ root, port: Number(loc.port) });
    try {
      const st = await req(loc.toString());
      assert.equal(st.status, 204);
      assert.equal(st.headers.get('range'), '0-399999');
      const p2 = await req(loc.toString(), { method: 'PATCH', body: data.subarray(400_000), headers: { 'Content-Range': `400000-${data.length - 1}` } });
      assert.equal(p2.status, 202);
      const done = new URL(p2.headers.get('location')!);
      done.searchParams.set('digest', b.digest);
      assert.equal((await req(done.toString(), { method: 'PUT' })).status, 201, 're-hashed from storage after the restart');
      const g = await req(`${reg.url}/v2/resume/repo/blobs/${b.digest}`);
      assert.equal(sha256(g.body), b.digest);
    } finally {
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('SIGTERM drains an in-flight upload before exiting', async () => {
    const reg = await startBerth({ env: { REGISTRY_HTTP_DRAINTIMEOUT: '10s' } });
    const start = await req(`${reg.url}/v2/drain/repo/blobs/uploads/`, { method: 'POST' });
    const loc = start.headers.get('location')!;
    const chunks = 20;
    const piece = Buffer.alloc(100_000, 1);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (sent === chunks) return ctrl.close();
        if (sent === 3) reg.proc.kill('SIGTERM');
        await new Promise((r) => setTimeout(r, 30));
        sent++;
        ctrl.enqueue(piece);
      },
    });
    const r = await fetch(loc, { method: 'PATCH', body, duplex: 'half' } as RequestInit);
    await r.arrayBuffer();
    assert.equal(r.status, 202, 'the in-flight request completed');
    assert.equal(r.headers.get('range'), `0-${chunks * piece.length - 1}`);
    assert.equal(await reg.stop(), 0);
  });

  test('upload purging removes sessions older than the configured age', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-purge-'));
    const root = join(tmp, 'data');
    const old = join(root, 'docker/registry/v2/repositories/purge/repo/_uploads/11111111-1111-4111-8111-111111111111');
    mkdirSync(old, { recursive: true });
    writeFileSync(join(old, 'startedat'), '2000-01-01T00:00:00Z');
    writeFileSync(join(old, 'data'), 'stale');
    const reg = await startBerth({ root, env: { REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING: '{"enabled": true, "age": "1h", "interval": "1s", "dryrun": false}' } });
    try {
      const fresh = await req(`${reg.url}/v2/purge/repo/blobs/uploads/`, { method: 'POST' });
      const deadline = Date.now() + 40_000;
      while (existsSync(old) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      assert.ok(!existsSync(old), 'stale upload purged');
      assert.equal((await req(fresh.headers.get('location')!)).status, 204, 'fresh upload kept');
    } finally {
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('logs: one JSON line per request with method, path, status, bytes, duration; never credentials', async () => {
    const reg = await startBerth();
    try {
      await req(`${reg.url}/v2/`, { headers: { Authorization: 'Basic c2VjcmV0dXNlcjpodW50ZXIy' } });
      await pushBlob(reg.url, 'log/repo', blob('logged'));
      await new Promise((r) => setTimeout(r, 200));
      const lines = reg.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      const listening = lines.find((l) => l.msg === 'listening')!;
      assert.ok(listening.url && listening.rootdirectory, 'start line says where it listens and stores');
      const reqLine = lines.find((l) => l.msg === 'request' && l.path === '/v2/')!;
      assert.equal(reqLine.method, 'GET');
      assert.equal(reqLine.status, 200);
      assert.equal(typeof reqLine.ms, 'number');
      assert.equal(typeof reqLine.bytesOut, 'number');
      assert.ok(!reg.logs().includes('c2VjcmV0dXNlcjpodW50ZXIy') && !reg.logs().includes('Authorization') && !reg.logs().includes('authorization'));
    } finally {
      await reg.stop();
    }
  });

  test('TLS: http.tls serves HTTPS', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(tmp, 'key.pem'), '-out', join(tmp, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
      const reg = await startBerth({ env: { REGISTRY_HTTP_TLS_CERTIFICATE: join(tmp, 'cert.pem'), REGISTRY_HTTP_TLS_KEY: join(tmp, 'key.pem') } });
      try {
        const status = await new Promise<number>((ok, fail) => {
          const r = httpsRequest(`https://127.0.0.1:${reg.port}/v2/`, { rejectUnauthorized: false }, (res) => {
            res.resume();
            ok(res.statusCode ?? 0);
          });
          r.on('error', fail);
          r.end();
        });
        assert.equal(status, 200);
      } finally {
        await reg.stop();
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('TLS client certificates (clientcas) and minimumtls: no certificate or a stranger\'s is refused, a CA-signed one is served', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-mtls-'));
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: tmp, stdio: 'ignore' });
    try {
      ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1');
      ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=client CA');
      ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=ci-runner');
      ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '1');
      ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'stranger.key', '-out', 'stranger.pem', '-days', '1', '-subj', '/CN=stranger');
      const reg = await startBerth({
        extraYaml: `  tls:\n    certificate: ${join(tmp, 'cert.pem')}\n    key: ${join(tmp, 'key.pem')}\n    clientcas: [${join(tmp, 'ca.pem')}]\n    minimumtls: tls1.3\n`,
      });
      const get = (opts: Record<string, unknown>): Promise<number | string> =>
        new Promise((ok) => {
          const r = httpsRequest(`https://127.0.0.1:${reg.port}/v2/`, { rejectUnauthorized: false, ...opts }, (res) => {
            res.resume();
            ok(res.statusCode ?? 0);
          });
          r.on('error', (e: NodeJS.ErrnoException) => ok(e.code ?? e.message));
          r.end();
        });
      try {
        const read = (f: string): Buffer => readFileSync(join(tmp, f));
        assert.equal(await get({ cert: read('client.pem'), key: read('client.key') }), 200);
        assert.notEqual(await get({}), 200, 'no client certificate');
        assert.notEqual(await get({ cert: read('stranger.pem'), key: read('stranger.key') }), 200, 'a certificate from another CA');
        assert.notEqual(await get({ cert: read('client.pem'), key: read('client.key'), maxVersion: 'TLSv1.2' }), 200, 'TLS 1.2 below minimumtls');
      } finally {
        await reg.stop();
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('berth config check validates example configs and names bad keys', () => {
    const cli = [join(PROJECT_ROOT, 'node_modules/tsx/dist/cli.mjs'), join(PROJECT_ROOT, 'src/cli/main.ts')];
    const examples = readdirSync(join(PROJECT_ROOT, 'examples')).filter((f) => f.endsWith('.yml'));
    assert.ok(examples.length > 0);
    for (const f of examples) {
      const r = spawnSync(process.execPath, [...cli, 'config', 'check', join(PROJECT_ROOT, 'examples', f)], { encoding: 'utf8' });
      assert.equal(r.status, 0, `${f}: ${r.stderr}`);
    }
    const tmp = mkdtempSync(join(tmpdir(), 'berth-cfg-'));
    try {
      writeFileSync(join(tmp, 'bad.yml'), 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/x\n  delete:\n    enabled: maybe\nhttp:\n  addr: :5000\n');
      const bad = spawnSync(process.execPath, [...cli, 'config', 'check', join(tmp, 'bad.yml')], { encoding: 'utf8' });
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /storage\.delete\.enabled: expected true or false/);
      writeFileSync(join(tmp, 'unknown.yml'), 'version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: :5000\n  bogus: 1\n');
      const unk = spawnSync(process.execPath, [...cli, 'config', 'check', join(tmp, 'unknown.yml')], { encoding: 'utf8' });
      assert.equal(unk.status, 0);
      assert.match(unk.stdout, /unknown configuration key http\.bogus/);
      const serveBad = spawnSync(process.execPath, [...cli, 'serve', join(tmp, 'bad.yml')], { encoding: 'utf8', timeout: 20_000 });
      assert.notEqual(serveBad.status, 0, 'serve refuses an invalid config');
      assert.match(serveBad.stderr, /storage\.delete\.enabled/);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('maintenance', () => {
  test('berth referrers rebuild restores the referrer index from manifests (storage written without one)', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-rebuild-'));
    const root = join(tmp, 'data');
    let reg = await startBerth({ root });
    const img = await pushImage(reg.url, 'rb/repo', 'v1');
    const empty = blob('{}');
    await pushBlob(reg.url, 'rb/repo', empty);
    const art = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.example.sig',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: empty.digest, size: 2 },
      layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: empty.digest, size: 2 }],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.digest, size: img.body.length },
    };
    const artBody = JSON.stringify(art);
    const put = await req(`${reg.url}/v2/rb/repo/manifests/${sha256(artBody)}`, { method: 'PUT', body: artBody, headers: { 'Content-Type': art.mediaType } });
    assert.equal(put.status, 201);
    await reg.stop({ keep: true });
    rmSync(join(root, 'docker/registry/v2/repositories/rb/repo/_referrers'), { recursive: true });
    const cfg = join(tmp, 'config.yml');
    writeFileSync(cfg, `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n`);
    const r = spawnSync(process.execPath, [join(PROJECT_ROOT, 'node_modules/tsx/dist/cli.mjs'), join(PROJECT_ROOT, 'src/cli/main.ts'), 'referrers', 'rebuild', cfg], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /indexed 1 referrers in 1 repositories/);
    reg = await startBerth({ root });
    try {
      const idx = (await req(`${reg.url}/v2/rb/repo/referrers/${img.digest}`)).json() as { manifests: Array<{ digest: string }> };
      assert.deepEqual(idx.manifests.map((m) => m.digest), [sha256(artBody)]);
    } finally {
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('workers', () => {
  test('http.workers: no connection is lost while a worker starts or restarts (each one answered, none left hanging)', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-workers-start-'));
    const root = join(tmp, 'data');
    const reg = await startBerth({ root, configYaml: `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${root}\nhttp:\n  addr: 127.0.0.1:0\n  workers: 3\n` });
    const { request } = await import('node:http');
    // A fresh connection per request, so every process's accept gets some; a hung one fails after 5 s.
    const probe = (): Promise<string> =>
      new Promise((ok) => {
        const r = request(`${reg.url}/v2/`, { agent: false, timeout: 5_000 }, (res) => {
          res.resume();
          res.on('end', () => ok(String(res.statusCode)));
        });
        r.on('timeout', () => {
          r.destroy();
          ok('hung');
        });
        r.on('error', (e) => ok(`error ${e.message}`));
        r.end();
      });
    const outcomes = new Map<string, number>();
    let stop = false;
    const loop = async (): Promise<void> => {
      while (!stop) {
        const o = await probe();
        outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
      }
    };
    const listening = (): number[] =>
      reg
        .logs()
        .split('\n')
        .filter((l) => l.includes('"msg":"listening"'))
        .map((l) => (JSON.parse(l) as { pid: number }).pid);
    const waitFor = async (what: () => boolean): Promise<void> => {
      for (let i = 0; i < 600 && !what(); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(what(), 'timed out waiting');
    };
    const loops = Array.from({ length: 6 }, loop);
    try {
      // The requests start while the two workers are still starting.
      await waitFor(() => reg.logs().includes('"msg":"all workers listening"'));
      // Then one worker dies and is restarted by the first process, with requests still coming.
      const first = reg.proc.pid;
      const worker = listening().find((p) => p !== first)!;
      const before = listening().length;
      process.kill(worker, 'SIGKILL');
      await waitFor(() => listening().length > before);
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      stop = true;
      await Promise.all(loops);
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
    const answered = outcomes.get('200') ?? 0;
    assert.ok(answered > 100, `only ${answered} answered: ${JSON.stringify([...outcomes])}`);
    // Connections reset by the killed worker are the client's to retry; a connection accepted and never answered is a bug.
    assert.equal(outcomes.get('hung') ?? 0, 0, JSON.stringify([...outcomes]));
  });

  test('http.workers: uploads continue across worker processes (shared generated secret, re-hash at commit)', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'berth-workers-'));
    const root = join(tmp, 'data');
    const reg = await startBerth({
      root,
      configYaml: `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  workers: 2\n`,
    });
    const { request } = await import('node:http');
    // Each request on a new connection, so the cluster spreads them over both workers.
    const call = (method: string, url: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> =>
      new Promise((ok, fail) => {
        const r = request(url, { method, agent: false, headers: { ...headers, 'Content-Length': String(body?.length ?? 0) } }, (res) => {
          res.resume();
          res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers }));
        });
        r.on('error', fail);
        r.end(body);
      });
    try {
      // startBerth returns at the first worker's line; the spread below needs both.
      for (let i = 0; i < 300 && !reg.logs().includes('"msg":"all workers listening"'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(reg.logs(), /"msg":"all workers listening"/);
      // A per-process cache is turned off with several workers, and each process says so once.
      const warned = reg
        .logs()
        .split('\n')
        .filter((l) => l.includes('descriptor caching is off'))
        .map((l) => (JSON.parse(l) as { pid: number }).pid);
      assert.equal(warned.length, 2, `one warning per process: ${JSON.stringify(warned)}`);
      assert.equal(new Set(warned).size, 2);
      const data = Buffer.alloc(600_000, 4);
      data.write('workers', 0);
      const b = blob(data);
      for (let round = 0; round < 3; round++) {
        const start = await call('POST', `${reg.url}/v2/workers/repo${round}/blobs/uploads/`);
        assert.equal(start.status, 202);
        let loc = start.headers.location as string;
        for (let off = 0; off < data.length; off += 200_000) {
          const p = await call('PATCH', loc, data.subarray(off, off + 200_000), { 'Content-Range': `${off}-${off + 199_999}` });
          assert.equal(p.status, 202, `PATCH at ${off}`);
          loc = p.headers.location as string;
        }
        const u = new URL(loc);
        u.searchParams.set('digest', b.digest);
        assert.equal((await call('PUT', u.toString())).status, 201);
      }
      const pids = new Set(reg.logs().split('\n').filter((l) => l.includes('"msg":"listening"')).map((l) => (JSON.parse(l) as { pid: number }).pid));
      assert.equal(pids.size, 2, 'two workers listening');
      assert.equal(sha256((await req(`${reg.url}/v2/workers/repo2/blobs/${b.digest}`)).body), b.digest);
    } finally {
      await reg.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
