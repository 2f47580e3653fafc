/**
 * berth/client authentication and retries against real servers: htpasswd (Basic) on Berth and on
 * distribution 2.8, Berth's built-in token server (tokens counted in the server's access log: cached per
 * scope set, refreshed after a 401, refresh tokens from a login), docker's config.json with a credential
 * helper, the Berth login store, and retries on 503/429 through a failing HTTP front.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, request } from 'node:http';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthError,
  berthCredentials,
  defaultCredentials,
  MediaType,
  NetworkError,
  parseChallenges,
  RegistryClient,
  RegistryError,
  removeLogin,
  saveLogin,
  type ClientOptions,
} from '../../src/client/index.ts';
import { startTestRegistry, type TestRegistry } from '../../src/testing/index.ts';
import { freePort, startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { startFlakyHttp } from '../helpers/flaky-http.ts';
import { htpasswdSet } from '../../src/auth/htpasswd.ts';
import { createHash } from 'node:crypto';

const PW = 'alice-Secret-1';
const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
let tmp: string;
let htpasswd: string;

/** A small image (config + one layer + manifest) pushed and read back: the operations every test needs. */
async function roundTrip(c: RegistryClient, repo: string, seed: string): Promise<void> {
  const cfg = Buffer.from(JSON.stringify({ seed }));
  const layer = Buffer.from(`layer ${seed} ${'x'.repeat(1000)}`);
  await c.pushBlob(repo, cfg);
  await c.pushBlob(repo, layer);
  const m = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(cfg), size: cfg.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }] };
  const put = await c.putManifest(repo, 'v1', m);
  const got = await c.getManifest(repo, 'v1');
  assert.equal(got.digest, put.digest);
  const tags: string[] = [];
  for await (const t of c.tags(repo)) tags.push(t);
  assert.deepEqual(tags, ['v1']);
}

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-client-auth-'));
  htpasswd = join(tmp, 'htpasswd');
  htpasswdSet(htpasswd, 'alice', PW);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

test('WWW-Authenticate parsing: quoted commas, several scopes, several challenges', () => {
  const c = parseChallenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull", Basic realm="x, y"');
  assert.equal(c.length, 2);
  assert.deepEqual(c[0], { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push repository:c:pull' } });
  assert.deepEqual(c[1], { scheme: 'basic', params: { realm: 'x, y' } });
  assert.deepEqual(parseChallenges('Basic realm="a \\"quoted\\" realm"')[0]?.params.realm, 'a "quoted" realm');
  assert.deepEqual(parseChallenges(undefined), []);
});

describe('htpasswd (Basic)', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry({ extraYaml: `auth:\n  htpasswd:\n    realm: test\n    path: ${htpasswd}\n` });
  });
  after(() => reg?.close());

  test('Berth: push and pull with a password; anonymous and wrong passwords are refused', async () => {
    const c = new RegistryClient({ registry: reg.url, credentials: { username: 'alice', password: PW } });
    await roundTrip(c, 'team/basic', 'berth-basic');
    c.close();
    const anon = new RegistryClient({ registry: reg.url, credentials: 'none' });
    await assert.rejects(anon.getManifest('team/basic', 'v1'), (e: RegistryError) => e instanceof RegistryError && e.status === 401 && e.code === 'UNAUTHORIZED');
    const wrong = new RegistryClient({ registry: reg.url, credentials: { username: 'alice', password: 'nope' } });
    await assert.rejects(wrong.ping(), (e: RegistryError) => e.status === 401 && !e.message.includes('nope'));
  });

  test('docker config.json: auths entry, then a credential helper on PATH', async () => {
    const dockerDir = join(tmp, 'docker');
    mkdirSync(dockerDir, { recursive: true });
    writeFileSync(join(dockerDir, 'config.json'), JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`alice:${PW}`).toString('base64') } } }));
    const env = { ...process.env, DOCKER_CONFIG: dockerDir, XDG_CONFIG_HOME: join(tmp, 'xdg-empty') };
    const c = new RegistryClient({ registry: reg.url, credentials: defaultCredentials({ env }) });
    await roundTrip(c, 'team/dockercfg', 'dockercfg');

    const bin = join(tmp, 'bin');
    mkdirSync(bin, { recursive: true });
    const helper = join(bin, 'docker-credential-bertest');
    const log = join(tmp, 'helper.log');
    writeFileSync(helper, `#!/bin/sh\nread host\necho "$1 $host" >> ${log}\nif [ "$host" = "${reg.host}" ]; then echo '{"ServerURL":"${reg.host}","Username":"alice","Secret":"${PW}"}'; else echo "credentials not found in native keychain"; exit 1; fi\n`);
    chmodSync(helper, 0o755);
    writeFileSync(join(dockerDir, 'config.json'), JSON.stringify({ auths: {}, credHelpers: { [reg.host]: 'bertest' } }));
    const henv = { ...env, PATH: `${bin}:${process.env.PATH}` };
    const h = new RegistryClient({ registry: reg.url, credentials: defaultCredentials({ env: henv }) });
    await roundTrip(h, 'team/helper', 'helper');
    assert.match(readFileSync(log, 'utf8'), new RegExp(`^get ${reg.host.replace(/\./g, '\\.')}$`, 'm'));
    // credsStore: a helper that does not know the host means anonymous, not an error.
    writeFileSync(join(dockerDir, 'config.json'), JSON.stringify({ credsStore: 'bertest' }));
    assert.equal(await defaultCredentials({ env: henv })('other.example.com'), undefined);
  });

  test('Berth login store: saved with mode 0600, used, removed', async () => {
    const store = join(tmp, 'xdg', 'berth', 'auth.json');
    const env = { ...process.env, XDG_CONFIG_HOME: join(tmp, 'xdg'), DOCKER_CONFIG: join(tmp, 'no-docker') };
    assert.equal(saveLogin(reg.host, { username: 'alice', password: PW }, { env }), store);
    assert.equal(statSync(store).mode & 0o777, 0o600);
    assert.deepEqual(berthCredentials(reg.host, { env }), { username: 'alice', password: PW });
    const c = new RegistryClient({ registry: reg.url, credentials: defaultCredentials({ env }) });
    await c.ping();
    assert.equal(removeLogin(reg.host, { env }), true);
    assert.equal(removeLogin(reg.host, { env }), false);
    const anon = new RegistryClient({ registry: reg.url, credentials: defaultCredentials({ env }) });
    await assert.rejects(anon.ping(), (e: RegistryError) => e.status === 401);
  });
});

test('htpasswd on distribution 2.8', async () => {
  const root = join(tmp, 'dist-data');
  const cfg = join(tmp, 'dist.yml');
  const port = await freePort();
  writeFileSync(cfg, `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${root}\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: s\nauth:\n  htpasswd:\n    realm: dist\n    path: ${htpasswd}\n`);
  const proc = spawn('docker-registry', ['serve', cfg], { stdio: 'ignore' });
  try {
    const c = new RegistryClient({ registry: `http://127.0.0.1:${port}`, credentials: { username: 'alice', password: PW }, retry: { attempts: 30, baseDelayMs: 100, maxDelayMs: 200 } });
    await c.ping();
    await roundTrip(c, 'team/dist', 'dist');
    const anon = new RegistryClient({ registry: `http://127.0.0.1:${port}`, credentials: 'none' });
    await assert.rejects(anon.getManifest('team/dist', 'v1'), (e: RegistryError) => e.status === 401);
  } finally {
    proc.kill('SIGTERM');
  }
});

describe('token flow (Berth built-in token server)', () => {
  let reg: RunningRegistry;
  const tokenRequests = (): number => (reg.logs().match(/"path":"\/auth\/token"/g) ?? []).length;
  before(async () => {
    const rules = join(tmp, 'rules.yml');
    writeFileSync(rules, 'rules:\n  - repository: "**"\n    users: { alice: ["*"] }\n    anonymous: [pull]\ncatalog: { users: [alice] }\n');
    const root = join(tmp, 'token-data');
    reg = await startBerth({
      root,
      configYaml: `version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n  secret: s\nauth:\n  token:\n    service: berth\n    issuer: berth-test\n    builtin:\n      htpasswd: ${htpasswd}\n      rules: ${rules}\n`,
    });
  });
  after(() => reg?.stop());

  test('tokens are fetched once per scope set and reused; a 401 gets one fresh token and a retry', async () => {
    const c = new RegistryClient({ registry: reg.url, credentials: { username: 'alice', password: PW } });
    const before = tokenRequests();
    await roundTrip(c, 'team/token', 'token');
    for (let i = 0; i < 20; i++) await c.headManifest('team/token', 'v1');
    const cat: string[] = [];
    for await (const r of c.catalog()) cat.push(r);
    assert.ok(cat.includes('team/token'));
    await new Promise((r) => setTimeout(r, 200));
    const used = tokenRequests() - before;
    // pull (the first HEAD), pull,push on team/token (it covers every later pull), the catalog: 3 tokens for
    // about 30 authenticated requests.
    assert.equal(used, 3, reg.logs().split('\n').filter((l) => l.includes('/auth/token')).join('\n'));
    assert.equal(c.authStats.tokenRequests, 3);
    assert.ok(c.authStats.cacheHits >= 25, `cache hits ${c.authStats.cacheHits}`);

    // Anonymous pulls get an anonymous token.
    const anon = new RegistryClient({ registry: reg.url, credentials: 'none' });
    assert.equal((await anon.getManifest('team/token', 'v1')).mediaType, MediaType.OciManifest);
    await assert.rejects(anon.putManifest('team/token', 'v2', Buffer.from('{}')), (e: RegistryError) => e.status === 401);

    // A token refused once (revoked, expired early): a fresh token, the request again, success.
    const front = await startFlakyHttp(reg.url);
    try {
      const f = new RegistryClient({ registry: front.url, credentials: { username: 'alice', password: PW } });
      await f.headManifest('team/token', 'v1');
      front.fail({ status: 401, when: (r) => r.headers.authorization?.startsWith('Bearer ') === true && r.url!.includes('/manifests/'), headers: { 'WWW-Authenticate': `Bearer realm="${front.url}/auth/token",service="berth",scope="repository:team/token:pull"` } });
      const got = await f.getManifest('team/token', 'v1');
      assert.equal(got.mediaType, MediaType.OciManifest);
      assert.equal(f.authStats.tokenRequests, 2);
      assert.deepEqual(front.log.filter((l) => l.startsWith('GET /v2/team/token/manifests/v1')).map((l) => l.split(' ').pop()), ['401', '200']);
    } finally {
      await front.close();
    }
  });

  test('login with offline_token yields a refresh token that later logins use (no password)', async () => {
    const c = new RegistryClient({ registry: reg.url, credentials: { username: 'alice', password: PW }, offlineToken: true });
    const { identityToken } = await c.login();
    assert.ok(identityToken, 'a refresh token');
    const r = new RegistryClient({ registry: reg.url, credentials: { identityToken: identityToken! } });
    await roundTrip(r, 'team/refresh', 'refresh');
    const bad = new RegistryClient({ registry: reg.url, credentials: { identityToken: 'not-a-token' } });
    await assert.rejects(bad.putManifest('team/refresh', 'v9', Buffer.from('{}')), (e: Error) => e instanceof AuthError && /401/.test(e.message) && !e.message.includes('not-a-token'));
  });
});

describe('retries', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startTestRegistry();
    await roundTrip(reg.client, 'retry/app', 'retry');
  });
  after(() => reg?.close());
  const opts = (url: string, extra: Partial<ClientOptions> = {}): ClientOptions => ({ registry: url, credentials: 'none', retry: { baseDelayMs: 10 }, ...extra });

  test('503 twice, then success; 429 honours Retry-After; attempts: 1 surfaces the error', async () => {
    const front = await startFlakyHttp(reg.url);
    try {
      const c = new RegistryClient(opts(front.url));
      front.fail({ status: 503 }, { status: 503 });
      assert.equal((await c.getManifest('retry/app', 'v1')).mediaType, MediaType.OciManifest);
      assert.deepEqual(front.log.map((l) => l.split(' ').pop()), ['503', '503', '200']);

      front.fail({ status: 429, headers: { 'Retry-After': '1' } });
      const t0 = Date.now();
      await c.headManifest('retry/app', 'v1');
      assert.ok(Date.now() - t0 >= 900, `waited ${Date.now() - t0} ms`);

      // A manifest PUT (replayable bytes) is retried too.
      front.fail({ status: 502, when: (r) => r.method === 'PUT' });
      const m = await reg.client.getManifest('retry/app', 'v1');
      await c.putManifest('retry/app', 'v2', m.bytes);

      const once = new RegistryClient(opts(front.url, { retry: { attempts: 1 } }));
      front.fail({ status: 503 });
      await assert.rejects(once.getManifest('retry/app', 'v1'), (e: RegistryError) => e instanceof RegistryError && e.status === 503 && e.code === 'UNAVAILABLE' && e.method === 'GET' && e.url.endsWith('/v2/retry/app/manifests/v1'));
    } finally {
      await front.close();
    }
  });

  test('connection refused is retried, then a NetworkError', async () => {
    const port = await freePort();
    const c = new RegistryClient(opts(`http://127.0.0.1:${port}`, { retry: { attempts: 3, baseDelayMs: 10 } }));
    const t0 = Date.now();
    await assert.rejects(c.ping(), (e: Error) => e instanceof NetworkError && /ECONNREFUSED/.test(e.message));
    assert.ok(Date.now() - t0 >= 10);
  });
});

test('HTTP_PROXY: requests go through the proxy in absolute form; NO_PROXY bypasses it', async () => {
  const reg = await startTestRegistry();
  const seen: string[] = [];
  const proxy = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const u = new URL(req.url!);
    const up = request({ host: u.hostname, port: u.port, method: req.method, path: `${u.pathname}${u.search}`, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((ok) => proxy.listen(0, '127.0.0.1', () => ok()));
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
  try {
    const c = new RegistryClient({ registry: reg.url, credentials: 'none', proxy: { http: proxyUrl } });
    await roundTrip(c, 'proxied/app', 'proxied');
    assert.ok(seen.length >= 5);
    assert.ok(seen.every((l) => l.includes(`${reg.url}/v2/`)), seen.join('\n'));
    c.close();
    const n = seen.length;
    const direct = new RegistryClient({ registry: reg.url, credentials: 'none', proxy: { http: proxyUrl, noProxy: '127.0.0.1' } });
    await direct.ping();
    assert.equal(seen.length, n);
    direct.close();
  } finally {
    proxy.closeAllConnections();
    proxy.close();
    await reg.close();
  }
});
