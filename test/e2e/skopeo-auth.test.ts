/**
 * skopeo against a Berth that requires authentication: `skopeo login` then copy in and out, with htpasswd,
 * with Berth's built-in token server and access rules, and with an external token server (a separate HTTP
 * server in this test that signs its own tokens with a key whose certificate is Berth's rootcertbundle, naming
 * the key by its libtrust id as distribution 2.8-era token servers do).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { buildImage, layoutDigest, type BuiltImage, type BuiltSource } from '../helpers/images.ts';
import { run } from '../helpers/run.ts';
import { htpasswdSet } from '../../src/auth/htpasswd.ts';
import { libtrustKeyId } from '../../src/auth/keys.ts';
import { parseScopes } from '../../src/auth/scopes.ts';

let tmp: string;
let image: BuiltSource<BuiltImage>;
let htpasswd: string;
const PW = 'correct-horse-battery';

const config = (root: string, auth: string): string => `version: 0.1
storage:
  filesystem:
    rootdirectory: ${root}
http:
  addr: 127.0.0.1:0
  secret: e2e-auth
auth:
${auth}`;

/** login, push, pull back with a fresh auth file; pushing without credentials must fail. */
async function roundTrip(reg: RunningRegistry, repo: string, user: string): Promise<void> {
  const authfile = join(tmp, `auth-${reg.port}.json`);
  const anon = await run('skopeo', ['copy', '--dest-tls-verify=false', image.src, `docker://${reg.host}/${repo}:v1`]).then(
    () => 'pushed',
    (e: Error) => e.message,
  );
  assert.match(anon, /401|unauthorized|authentication required/i, 'an anonymous push is refused');
  const bad = await run('skopeo', ['login', '--tls-verify=false', '--authfile', authfile, '-u', user, '-p', 'wrong-password', reg.host]).then(
    () => 'logged in',
    (e: Error) => e.message,
  );
  assert.match(bad, /401|unauthorized|invalid/i, 'a wrong password is refused at login');
  await run('skopeo', ['login', '--tls-verify=false', '--authfile', authfile, '-u', user, '-p', PW, reg.host]);
  await run('skopeo', ['copy', '--authfile', authfile, '--dest-tls-verify=false', image.src, `docker://${reg.host}/${repo}:v1`]);
  const out = join(tmp, `out-${reg.port}`);
  await run('skopeo', ['copy', '--authfile', authfile, '--src-tls-verify=false', `docker://${reg.host}/${repo}:v1`, `oci:${out}:v1`]);
  assert.equal(layoutDigest(out, 'v1'), image.built.desc.digest);
  const tags = await run('skopeo', ['list-tags', '--authfile', authfile, '--tls-verify=false', `docker://${reg.host}/${repo}`]);
  assert.deepEqual((JSON.parse(tags.stdout) as { Tags: string[] }).Tags, ['v1']);
}

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'berth-e2e-auth-'));
  image = buildImage(join(tmp, 'src'), 'v1', { layers: 2, seed: 'e2e-auth' });
  htpasswd = join(tmp, 'htpasswd');
  htpasswdSet(htpasswd, 'alice', PW);
  htpasswdSet(htpasswd, 'bob', PW);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('skopeo login + push/pull against an authenticating Berth', () => {
  test('htpasswd', async () => {
    const reg = await startBerth({ configYaml: config(join(tmp, 'basic'), `  htpasswd:\n    realm: berth\n    path: ${htpasswd}\n`) });
    try {
      await roundTrip(reg, 'team/app', 'alice');
    } finally {
      await reg.stop();
    }
  });

  test('the built-in token server with access rules (bob may pull but not push)', async () => {
    const rules = join(tmp, 'rules.yml');
    writeFileSync(rules, 'rules:\n  - repository: "team/**"\n    users: { alice: [pull, push], bob: [pull] }\n');
    const reg = await startBerth({ configYaml: config(join(tmp, 'builtin'), `  token:\n    service: berth\n    issuer: berth\n    builtin:\n      htpasswd: ${htpasswd}\n      rules: ${rules}\n`) });
    try {
      await roundTrip(reg, 'team/app', 'alice');
      const bobAuth = join(tmp, 'bob.json');
      await run('skopeo', ['login', '--tls-verify=false', '--authfile', bobAuth, '-u', 'bob', '-p', PW, reg.host]);
      const out = join(tmp, 'bob-out');
      await run('skopeo', ['copy', '--authfile', bobAuth, '--src-tls-verify=false', `docker://${reg.host}/team/app:v1`, `oci:${out}:v1`]);
      assert.equal(layoutDigest(out, 'v1'), image.built.desc.digest);
      const push = await run('skopeo', ['copy', '--authfile', bobAuth, '--dest-tls-verify=false', image.src, `docker://${reg.host}/team/other:v1`]).then(
        () => 'pushed',
        (e: Error) => e.message,
      );
      assert.match(push, /401|unauthorized|denied|insufficient/i, 'bob cannot push');
    } finally {
      await reg.stop();
    }
  });

  test('an external token server trusted through rootcertbundle', async () => {
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: tmp, stdio: 'ignore' });
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'issuer.key', '-out', 'issuer.pem', '-days', '2', '-subj', '/CN=external token server');
    const key = createPrivateKey(readFileSync(join(tmp, 'issuer.key')));
    let issued = 0;
    const tokenServer: Server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const basic = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
      if (basic !== `alice:${PW}`) {
        res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="external"' }).end();
        return;
      }
      const now = Math.floor(Date.now() / 1000);
      void new SignJWT({ access: parseScopes(url.searchParams.getAll('scope')) })
        .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: libtrustKeyId(key) })
        .setIssuer('external-issuer')
        .setAudience(url.searchParams.get('service') ?? '')
        .setSubject('alice')
        .setIssuedAt(now)
        .setExpirationTime(now + 120)
        .sign(key)
        .then((token) => {
          issued++;
          res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token, expires_in: 120 }));
        });
    });
    await new Promise<void>((ok) => tokenServer.listen(0, '127.0.0.1', ok));
    const realm = `http://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`;
    const reg = await startBerth({
      configYaml: config(join(tmp, 'external'), `  token:\n    realm: ${realm}\n    service: berth-external\n    issuer: external-issuer\n    rootcertbundle: ${join(tmp, 'issuer.pem')}\n`),
    });
    try {
      await roundTrip(reg, 'ext/app', 'alice');
      assert.ok(issued > 0, 'skopeo got its tokens from the external server');
    } finally {
      await reg.stop();
      await new Promise<void>((ok) => tokenServer.close(() => ok()));
    }
  });
});
