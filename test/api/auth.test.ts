/**
 * Authentication and authorization over real HTTP: htpasswd (Basic) and bearer tokens from Berth's built-in
 * token server with access rules. An authorization matrix over every endpoint id: each refusal gets the
 * right status and challenge, no data, and writes nothing; then the same requests succeed with the right
 * token. Also the token endpoint itself, and that no secret reaches a log line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { blob, errorCode, pushImage, req, sha256 } from '../helpers/oci.ts';
import { htpasswdSet } from '../../src/auth/htpasswd.ts';
import { libtrustKeyId } from '../../src/auth/keys.ts';

let tmp: string;
let htpasswd: string;
let rules: string;
let basicReg: RunningRegistry;
let tokenReg: RunningRegistry;
let tokenRoot: string;
let img: Awaited<ReturnType<typeof pushImage>>;
const PASSWORDS = { alice: 'alice-Secret-1', bob: 'bob-Secret-2' };

const basic = (user: string, pw: string): string => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;

/** Every file under a directory with its size and mtime: "nothing was written" is this staying equal. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(`${p}:${statSync(p).size}:${statSync(p).mtimeMs}`);
    }
  };
  walk(dir);
  return out.sort();
}

async function token(scope: string[], user?: keyof typeof PASSWORDS): Promise<string> {
  const q = new URLSearchParams({ service: 'berth' });
  for (const s of scope) q.append('scope', s);
  const r = await req(`${tokenReg.url}/auth/token?${q}`, user ? { headers: { Authorization: basic(user, PASSWORDS[user]) } } : {});
  assert.equal(r.status, 200, r.body.toString());
  return (r.json() as { token: string }).token;
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-auth-'));
  htpasswd = join(tmp, 'htpasswd');
  htpasswdSet(htpasswd, 'alice', PASSWORDS.alice);
  htpasswdSet(htpasswd, 'bob', PASSWORDS.bob);
  rules = join(tmp, 'rules.yml');
  writeFileSync(
    rules,
    `groups:
  devs: [bob]
rules:
  - repository: "public/**"
    anonymous: [pull]
    users: { alice: ["*"] }
  - repository: "team/**"
    users: { alice: [pull, push, delete] }
    groups: { devs: [pull] }
catalog: { users: [alice] }
`,
  );
  // Content to protect, pushed before authentication is turned on.
  tokenRoot = join(tmp, 'token-data');
  const open = await startBerth({ root: tokenRoot });
  img = await pushImage(open.url, 'team/app', 'v1');
  await pushImage(open.url, 'public/base', 'v1');
  await open.stop({ keep: true });
  const authYaml = (root: string, auth: string): string => `version: 0.1
log:
  level: debug
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:0
  secret: auth-test
auth:
${auth}`;
  tokenReg = await startBerth({ root: tokenRoot, configYaml: authYaml(tokenRoot, `  token:\n    service: berth\n    issuer: berth-test\n    builtin:\n      htpasswd: ${htpasswd}\n      rules: ${rules}\n`) });
  const basicRoot = join(tmp, 'basic-data');
  basicReg = await startBerth({ root: basicRoot, configYaml: authYaml(basicRoot, `  htpasswd:\n    realm: test-realm\n    path: ${htpasswd}\n`) });
});

after(async () => {
  await tokenReg?.stop({ keep: true });
  await basicReg?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

interface Endpoint {
  id: string;
  method: string;
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
  /** The scope the challenge must ask for ('' when none). */
  scope: string;
  /** A status that means the request was let through. */
  ok: number[];
}

function endpoints(): Endpoint[] {
  const r = 'team/app';
  const up = `/v2/${r}/blobs/uploads/${randomUUID()}`;
  const fresh = blob(`fresh-${randomUUID()}`);
  return [
    { id: 'end-1', method: 'GET', path: '/v2/', scope: '', ok: [200] },
    { id: 'end-2', method: 'GET', path: `/v2/${r}/blobs/${img.layer.digest}`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-2', method: 'HEAD', path: `/v2/${r}/blobs/${img.layer.digest}`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-3', method: 'GET', path: `/v2/${r}/manifests/v1`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-4a', method: 'POST', path: `/v2/${r}/blobs/uploads/`, scope: `repository:${r}:pull,push`, ok: [202] },
    { id: 'end-4b', method: 'POST', path: `/v2/${r}/blobs/uploads/?digest=${fresh.digest}`, body: fresh.data, headers: { 'Content-Type': 'application/octet-stream' }, scope: `repository:${r}:pull,push`, ok: [201] },
    { id: 'end-5', method: 'PATCH', path: up, body: Buffer.from('x'), scope: `repository:${r}:pull,push`, ok: [404] },
    { id: 'end-6', method: 'PUT', path: `${up}?digest=${fresh.digest}`, scope: `repository:${r}:pull,push`, ok: [404] },
    { id: 'end-7', method: 'PUT', path: `/v2/${r}/manifests/v2`, body: img.body, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' }, scope: `repository:${r}:pull,push`, ok: [201] },
    { id: 'end-8a', method: 'GET', path: `/v2/${r}/tags/list`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-8b', method: 'GET', path: `/v2/${r}/tags/list?n=1`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-9', method: 'DELETE', path: `/v2/${r}/manifests/v2`, scope: `repository:${r}:delete`, ok: [202, 404] },
    { id: 'end-10', method: 'DELETE', path: `/v2/${r}/blobs/${fresh.digest}`, scope: `repository:${r}:delete`, ok: [202, 404] },
    { id: 'end-11', method: 'POST', path: `/v2/${r}/blobs/uploads/?mount=${img.layer.digest}&from=public/base`, scope: `repository:${r}:pull,push repository:public/base:pull`, ok: [201, 202] },
    { id: 'end-12a', method: 'GET', path: `/v2/${r}/referrers/${img.digest}`, scope: `repository:${r}:pull`, ok: [200] },
    { id: 'end-13', method: 'GET', path: up, scope: `repository:${r}:pull`, ok: [404] },
    { id: 'catalog', method: 'GET', path: '/v2/_catalog', scope: 'registry:catalog:*', ok: [200] },
  ];
}

const call = (base: string, e: Endpoint, authorization?: string): ReturnType<typeof req> =>
  req(`${base}${e.path}`, { method: e.method, ...(e.body ? { body: e.body } : {}), headers: { ...e.headers, ...(authorization ? { Authorization: authorization } : {}) } });

describe('token authentication: the authorization matrix over every endpoint', () => {
  let key: KeyObject;
  const now = (): number => Math.floor(Date.now() / 1000);
  const forge = (claims: Record<string, unknown>, signer: KeyObject = key, header: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT({ iss: 'berth-test', aud: 'berth', sub: 'alice', exp: now() + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: libtrustKeyId(signer), ...header })
      .sign(signer);
  const all = (name: string): Array<{ type: string; name: string; actions: string[] }> => [
    { type: 'repository', name, actions: ['*'] },
    { type: 'repository', name: 'public/base', actions: ['*'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
  ];

  before(() => {
    key = createPrivateKey(readFileSync(join(tokenRoot, 'berth/token-key.pem')));
  });

  test('every refusal: 401, the right challenge and error, no data, nothing written', async () => {
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const pullOnly = await token(['repository:team/app:pull'], 'bob');
    const otherRepo = await token(['repository:public/base:pull,push,delete', 'registry:catalog:*'], 'alice');
    const good = await forge({ access: all('team/app') });
    const [h, , s] = good.split('.');
    const cases: Array<{ name: string; auth: (e: Endpoint) => Promise<string | undefined>; error?: string; appliesTo?: (e: Endpoint) => boolean }> = [
      { name: 'no credentials', auth: async () => undefined },
      { name: 'a wrong password (Basic, where a token is needed)', auth: async () => basic('alice', 'wrong') },
      { name: 'a garbage bearer token', auth: async () => 'Bearer abc.def.ghi', error: 'invalid_token' },
      { name: 'an expired token', auth: async () => `Bearer ${await forge({ access: all('team/app'), exp: now() - 120 })}`, error: 'invalid_token' },
      { name: 'a token for another audience', auth: async () => `Bearer ${await forge({ access: all('team/app'), aud: 'other-registry' })}`, error: 'invalid_token' },
      { name: 'a token from another issuer', auth: async () => `Bearer ${await forge({ access: all('team/app'), iss: 'someone' })}`, error: 'invalid_token' },
      { name: 'a token signed by an unknown key', auth: async () => `Bearer ${await forge({ access: all('team/app') }, stranger)}`, error: 'invalid_token' },
      { name: 'a token signed by an unknown key under the known kid', auth: async () => `Bearer ${await forge({ access: all('team/app') }, stranger, { kid: libtrustKeyId(key) })}`, error: 'invalid_token' },
      {
        name: 'a tampered payload',
        auth: async () => `Bearer ${h}.${Buffer.from(JSON.stringify({ iss: 'berth-test', aud: 'berth', sub: 'mallory', exp: now() + 300, access: all('team/app') })).toString('base64url')}.${s}`,
        error: 'invalid_token',
      },
      {
        name: 'alg none',
        auth: async () => `Bearer ${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'berth-test', aud: 'berth', sub: 'alice', exp: now() + 300, access: all('team/app') })).toString('base64url')}.`,
        error: 'invalid_token',
      },
      { name: 'a valid token for another repository', auth: async () => `Bearer ${otherRepo}`, error: 'insufficient_scope', appliesTo: (e) => e.scope.startsWith('repository:team/app') },
      { name: 'a pull-only token used to push or delete', auth: async () => `Bearer ${pullOnly}`, error: 'insufficient_scope', appliesTo: (e) => e.scope.includes('push') || e.scope.includes('delete') },
    ];
    for (const c of cases) {
      for (const e of endpoints()) {
        if (c.appliesTo && !c.appliesTo(e)) continue;
        if (e.id === 'end-1' && c.error === 'insufficient_scope') continue;
        const before = snapshot(tokenRoot);
        const r = await call(tokenReg.url, e, await c.auth(e));
        const what = `${c.name}: ${e.id} ${e.method} ${e.path}`;
        assert.equal(r.status, 401, what);
        if (e.method !== 'HEAD') assert.equal(errorCode(r.body), 'UNAUTHORIZED', what);
        const challenge = r.headers.get('www-authenticate') ?? '';
        assert.ok(challenge.startsWith(`Bearer realm="${tokenReg.url}/auth/token",service="berth"`), `${what}: ${challenge}`);
        if (e.scope) assert.ok(challenge.includes(`scope="${e.scope}"`), `${what}: ${challenge}`);
        if (c.error) assert.ok(challenge.includes(`error="${c.error}"`), `${what}: ${challenge}`);
        else assert.ok(!challenge.includes('error='), `${what}: ${challenge}`);
        assert.ok(!r.body.includes(img.body) && !r.body.includes(img.layer.data), `${what}: no data`);
        assert.deepEqual(snapshot(tokenRoot), before, `${what}: nothing written`);
      }
    }
  });

  test('the same requests succeed with a token granting them', async () => {
    const t = await token(['repository:team/app:pull,push,delete', 'repository:public/base:pull', 'registry:catalog:*'], 'alice');
    for (const e of endpoints()) {
      const r = await call(tokenReg.url, e, `Bearer ${t}`);
      assert.ok(e.ok.includes(r.status), `${e.id} ${e.method} ${e.path}: ${r.status} ${r.body.toString().slice(0, 200)}`);
    }
    const m = await req(`${tokenReg.url}/v2/team/app/manifests/v1`, { headers: { Authorization: `Bearer ${t}`, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(sha256(m.body), img.digest);
  });

  test('anonymous pull of public repositories is one rule; anonymous push is not', async () => {
    const anon = await token(['repository:public/base:pull,push', 'repository:team/app:pull']);
    const payload = JSON.parse(Buffer.from(anon.split('.')[1]!, 'base64url').toString()) as { access: unknown; sub: string };
    assert.deepEqual(payload.access, [{ type: 'repository', name: 'public/base', actions: ['pull'] }], 'the token holds only the intersection');
    assert.equal((await req(`${tokenReg.url}/v2/public/base/manifests/v1`, { headers: { Authorization: `Bearer ${anon}` } })).status, 200);
    assert.equal((await req(`${tokenReg.url}/v2/public/base/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${anon}` } })).status, 401);
    assert.equal((await req(`${tokenReg.url}/v2/team/app/manifests/v1`, { headers: { Authorization: `Bearer ${anon}` } })).status, 401);
  });

  test('the token endpoint: wrong passwords, unknown service, OAuth2 password and refresh grants, offline tokens', async () => {
    const bad = await req(`${tokenReg.url}/auth/token?service=berth&scope=repository:team/app:pull`, { headers: { Authorization: basic('alice', 'nope') } });
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assert.ok(!bad.body.toString().includes('token"'));
    assert.equal((await req(`${tokenReg.url}/auth/token?service=elsewhere`, { headers: { Authorization: basic('alice', PASSWORDS.alice) } })).status, 400);
    const offline = (await req(`${tokenReg.url}/auth/token?service=berth&offline_token=true&client_id=test&scope=repository:team/app:pull`, { headers: { Authorization: basic('bob', PASSWORDS.bob) } })).json() as Record<string, unknown>;
    assert.equal(typeof offline.refresh_token, 'string');
    assert.ok((offline.expires_in as number) >= 60);
    assert.equal(typeof offline.issued_at, 'string');
    assert.equal(offline.token, offline.access_token);
    const form = (f: Record<string, string>): ReturnType<typeof req> =>
      req(`${tokenReg.url}/auth/token`, { method: 'POST', body: new URLSearchParams(f).toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    const pw = await form({ grant_type: 'password', username: 'alice', password: PASSWORDS.alice, service: 'berth', client_id: 'test', access_type: 'offline', scope: 'repository:team/app:pull,push repository:other/x:pull' });
    assert.equal(pw.status, 200);
    const pwBody = pw.json() as { access_token: string; refresh_token: string; scope: string };
    assert.equal(pwBody.scope, 'repository:team/app:pull,push');
    const refreshed = await form({ grant_type: 'refresh_token', refresh_token: pwBody.refresh_token, service: 'berth', client_id: 'test', scope: 'repository:team/app:delete' });
    assert.equal(refreshed.status, 200);
    assert.equal((refreshed.json() as { scope: string }).scope, 'repository:team/app:delete');
    assert.equal((await form({ grant_type: 'refresh_token', refresh_token: pwBody.access_token, service: 'berth', client_id: 'test' })).status, 401, 'an access token is not a refresh token');
    assert.equal((await form({ grant_type: 'password', username: 'alice', password: 'x', service: 'berth', client_id: 'test' })).status, 401);
    assert.equal((await form({ grant_type: 'client_credentials', service: 'berth' })).status, 400);
  });
});

describe('htpasswd authentication', () => {
  test('no or wrong credentials: 401 with a Basic challenge, nothing written; valid users may do everything', async () => {
    const root = basicReg.root;
    for (const auth of [undefined, basic('alice', 'wrong'), basic('nobody', PASSWORDS.alice), 'Basic !!!', `Bearer ${'x'.repeat(20)}`]) {
      for (const e of endpoints()) {
        const before = snapshot(root);
        const r = await call(basicReg.url, e, auth);
        assert.equal(r.status, 401, `${auth}: ${e.id} ${e.method}`);
        assert.equal(r.headers.get('www-authenticate'), 'Basic realm="test-realm"');
        if (e.method !== 'HEAD') assert.equal(errorCode(r.body), 'UNAUTHORIZED');
        assert.deepEqual(snapshot(root), before);
      }
    }
    const ok = basic('bob', PASSWORDS.bob);
    assert.equal((await req(`${basicReg.url}/v2/`, { headers: { Authorization: ok } })).status, 200);
    const b = blob('htpasswd-pushed');
    assert.equal((await req(`${basicReg.url}/v2/x/y/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data, headers: { Authorization: ok } })).status, 201);
    assert.equal(sha256((await req(`${basicReg.url}/v2/x/y/blobs/${b.digest}`, { headers: { Authorization: ok } })).body), b.digest);
  });
});

describe('logs', () => {
  test('no password, token or Authorization header appears in any log line', async () => {
    // Make sure both servers have logged requests with every kind of credential.
    const t = await token(['repository:team/app:pull'], 'alice');
    await req(`${tokenReg.url}/v2/team/app/manifests/v1`, { headers: { Authorization: `Bearer ${t}` } });
    await req(`${basicReg.url}/v2/`, { headers: { Authorization: basic('alice', PASSWORDS.alice) } });
    for (const reg of [tokenReg, basicReg]) {
      const logs = reg.logs();
      assert.match(logs, /"msg":"request"/, 'access logs are on');
      for (const secret of [PASSWORDS.alice, PASSWORDS.bob, t, t.split('.')[2]!, Buffer.from(`alice:${PASSWORDS.alice}`).toString('base64')]) {
        assert.ok(!logs.includes(secret), `a secret leaked into the log: ${secret.slice(0, 12)}…`);
      }
      assert.ok(!/authorization/i.test(logs), 'no Authorization header in logs');
    }
  });
});

describe('berth token-server', () => {
  test('runs the built-in token server alone; a registry elsewhere trusts it through the JWKS it writes', async () => {
    const { spawn } = await import('node:child_process');
    const { PROJECT_ROOT } = await import('../helpers/servers.ts');
    const dir = mkdtempSync(join(tmpdir(), 'berth-token-server-'));
    const jwks = join(dir, 'jwks.json');
    writeFileSync(
      join(dir, 'ts.yml'),
      `version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  token:\n    service: remote-registry\n    issuer: central-auth\n    builtin:\n      htpasswd: ${htpasswd}\n      rules: ${rules}\n      key: ${join(dir, 'signing.pem')}\n`,
    );
    const proc = spawn(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'token-server', join(dir, 'ts.yml'), '--jwks', jwks], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const port = await new Promise<number>((ok, fail) => {
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /"msg":"listening","port":(\d+)/.exec(out);
        if (m) ok(Number(m[1]));
      });
      proc.once('exit', (code) => fail(new Error(`token-server exited ${code}: ${out}`)));
    });
    const reg = await startBerth({
      configYaml: `version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  token:\n    realm: http://127.0.0.1:${port}/auth/token\n    service: remote-registry\n    issuer: central-auth\n    jwks: ${jwks}\n`,
    });
    try {
      const challenge = (await req(`${reg.url}/v2/public/base/tags/list`)).headers.get('www-authenticate');
      assert.equal(challenge, `Bearer realm="http://127.0.0.1:${port}/auth/token",service="remote-registry",scope="repository:public/base:pull"`);
      const t = await req(`http://127.0.0.1:${port}/auth/token?service=remote-registry&scope=repository:public/base:pull,push`, { headers: { Authorization: basic('alice', PASSWORDS.alice) } });
      assert.equal(t.status, 200);
      const bearer = `Bearer ${(t.json() as { token: string }).token}`;
      const b = blob('pushed-with-a-remote-token');
      assert.equal((await req(`${reg.url}/v2/public/base/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: b.data, headers: { Authorization: bearer } })).status, 201);
      assert.equal(sha256((await req(`${reg.url}/v2/public/base/blobs/${b.digest}`, { headers: { Authorization: bearer } })).body), b.digest);
      assert.equal((await req(`${reg.url}/v2/team/app/tags/list`, { headers: { Authorization: bearer } })).status, 401);
      assert.equal((await req(`http://127.0.0.1:${port}/v2/`)).status, 404, 'the token server serves nothing else');
    } finally {
      await reg.stop();
      proc.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
