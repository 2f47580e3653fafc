import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, type JWK } from 'jose';
import { Htpasswd, htpasswdSet, parseHtpasswd } from './htpasswd.ts';
import { libtrustKeyId, jwkThumbprint, loadTrustedKeys } from './keys.ts';
import { AccessRules, RulesError } from './rules.ts';
import { covers, parseScopes, requiredAccess } from './scopes.ts';
import { TokenIssuer, TokenVerifier, TokenError } from './token.ts';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'berth-auth-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('scopes', () => {
  test('parse, required access per endpoint, coverage with *', () => {
    assert.deepEqual(parseScopes(['repository:a/b:pull,push repository:host:5000/x:pull', 'registry:catalog:*', 'junk']), [
      { type: 'repository', name: 'a/b', actions: ['pull', 'push'] },
      { type: 'repository', name: 'host:5000/x', actions: ['pull'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    assert.deepEqual(requiredAccess('manifest', 'GET', 'r'), [{ type: 'repository', name: 'r', actions: ['pull'] }]);
    assert.deepEqual(requiredAccess('upload', 'PATCH', 'r'), [{ type: 'repository', name: 'r', actions: ['pull', 'push'] }]);
    assert.deepEqual(requiredAccess('blob', 'DELETE', 'r'), [{ type: 'repository', name: 'r', actions: ['delete'] }]);
    assert.deepEqual(requiredAccess('upload-start', 'POST', 'r', 'src'), [
      { type: 'repository', name: 'r', actions: ['pull', 'push'] },
      { type: 'repository', name: 'src', actions: ['pull'] },
    ]);
    assert.deepEqual(requiredAccess('catalog', 'GET', undefined), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    assert.deepEqual(requiredAccess('base', 'GET', undefined), []);
    assert.ok(covers([{ type: 'repository', name: 'r', actions: ['*'] }], requiredAccess('manifest', 'DELETE', 'r')));
    assert.ok(!covers([{ type: 'repository', name: 'r', actions: ['pull'] }], requiredAccess('manifest', 'PUT', 'r')));
    assert.ok(!covers([{ type: 'repository', name: 'other', actions: ['pull', 'push'] }], requiredAccess('manifest', 'PUT', 'r')));
  });
});

describe('htpasswd', () => {
  test('bcrypt entries only; verify; re-read on change; berth htpasswd add writes $2y$', async () => {
    const file = join(dir, 'htpasswd');
    htpasswdSet(file, 'alice', 'secret-a');
    htpasswdSet(file, 'bob', 'secret-b');
    writeFileSync(file, `${readFileSync(file, 'utf8')}plain:{SHA}abc\nmd5:$apr1$xyz$abc\n`);
    const skipped: string[][] = [];
    const h = new Htpasswd(file, (p) => skipped.push(p));
    assert.match(readFileSync(file, 'utf8'), /^alice:\$2y\$10\$/m);
    assert.equal(skipped[0]!.length, 2);
    assert.equal(await h.verify('alice', 'secret-a'), true);
    assert.equal(await h.verify('alice', 'secret-a'), true, 'remembered');
    assert.equal(await h.verify('alice', 'wrong'), false);
    assert.equal(await h.verify('nobody', 'secret-a'), false);
    assert.equal(await h.verify('plain', 'abc'), false);
    htpasswdSet(file, 'alice', 'changed');
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    assert.equal(await h.verify('alice', 'secret-a'), false, 'the old password stops working when the file changes');
    assert.equal(await h.verify('alice', 'changed'), true);
    assert.equal(parseHtpasswd('x\n:y\n').skipped.length, 2);
  });
});

describe('access rules', () => {
  const rules = AccessRules.parse(`
groups:
  devs: [alice, bob]
rules:
  - repository: "public/**"
    anonymous: [pull]
    users: { alice: ["*"] }
  - repository: "team/*"
    groups: { devs: [pull, push] }
    users: { alice: [delete] }
    authenticated: [pull]
catalog: { users: [alice] }
`);
  test('first match wins; anonymous, authenticated, users and groups; globs', () => {
    assert.deepEqual(rules.actionsFor(undefined, 'public/a/b'), ['pull']);
    assert.deepEqual(rules.actionsFor('alice', 'public/x').sort(), ['delete', 'pull', 'push']);
    assert.deepEqual(rules.actionsFor(undefined, 'team/app'), []);
    assert.deepEqual(rules.actionsFor('carol', 'team/app'), ['pull']);
    assert.deepEqual(rules.actionsFor('bob', 'team/app').sort(), ['pull', 'push']);
    assert.deepEqual(rules.actionsFor('alice', 'team/app').sort(), ['delete', 'pull', 'push']);
    assert.deepEqual(rules.actionsFor('alice', 'team/app/nested'), [], '* does not cross /');
    assert.deepEqual(rules.actionsFor('alice', 'private/x'), [], 'no rule: nothing');
  });
  test('a grant is the intersection of what was asked and what is allowed', () => {
    assert.deepEqual(rules.grant('bob', parseScopes('repository:team/app:pull,push,delete repository:private/x:pull registry:catalog:*')), [
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
    ]);
    assert.deepEqual(rules.grant('alice', parseScopes('registry:catalog:*')), [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    assert.deepEqual(rules.grant(undefined, parseScopes('repository:public/a:pull,push')), [{ type: 'repository', name: 'public/a', actions: ['pull'] }]);
  });
  test('a malformed rules file is refused with every problem located', () => {
    assert.throws(() => AccessRules.parse('rules:\n  - repository: "a/*"\n    anonymous: [pul]\n  - users: {}\n  - repository: b\n    extra: 1\n', 'rules.yml'), (e: unknown) => {
      assert.ok(e instanceof RulesError);
      assert.match(e.message, /rules\.yml: .*rules\[0\]\.anonymous: unknown action "pul"/);
      assert.match(e.message, /rules\[1\]\.repository: expected a glob/);
      assert.match(e.message, /rules\[2\]\.extra: unknown key/);
      return true;
    });
    assert.throws(() => AccessRules.parse('rules: [\n'), /not valid YAML/);
    assert.throws(() => AccessRules.parse('- a\n'), /expected a mapping/);
  });
});

describe('tokens', () => {
  const service = 'registry.test';
  const iss = 'test-issuer';
  let signer: KeyObject;
  let issuer: TokenIssuer;
  let verifier: TokenVerifier;
  const access = [{ type: 'repository', name: 'a', actions: ['pull'] }];
  const sign = (claims: Record<string, unknown>, header: Record<string, unknown>, key: KeyObject = signer, alg = 'ES256'): Promise<string> =>
    new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(key);
  const now = (): number => Math.floor(Date.now() / 1000);

  before(() => {
    signer = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    issuer = new TokenIssuer({ issuer: iss, key: signer });
    verifier = new TokenVerifier({ issuer: iss, service, trusted: issuer.trusted() });
  });

  test('libtrust key ids are 12 groups of 4 base32 characters; thumbprints are base64url', () => {
    assert.match(libtrustKeyId(signer), /^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
    assert.match(jwkThumbprint(signer), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(libtrustKeyId(signer), issuer.kid);
  });

  test('issued tokens verify; refresh tokens are only refresh tokens', async () => {
    const t = await issuer.issue('alice', service, access);
    assert.deepEqual(await verifier.verify(t.token), { subject: 'alice', access });
    const r = await issuer.refreshToken('alice', service);
    assert.equal(await issuer.verifyRefresh(r, service), 'alice');
    await assert.rejects(verifier.verify(r), TokenError, 'a refresh token is not an access token');
    await assert.rejects(issuer.verifyRefresh(t.token, service), TokenError);
  });

  test('expired, not yet valid, wrong audience or issuer, unknown key, tampered, alg none, HMAC: all refused', async () => {
    const base = { iss, aud: service, sub: 'alice', access, exp: now() + 300, nbf: now() - 10 };
    const kid = issuer.kid;
    await assert.rejects(verifier.verify(await sign({ ...base, exp: now() - 61 }, { kid })), /exp/);
    assert.ok(await verifier.verify(await sign({ ...base, exp: now() - 30 }, { kid })), '60 s leeway');
    await assert.rejects(verifier.verify(await sign({ ...base, nbf: now() + 120 }, { kid })), /nbf/);
    await assert.rejects(verifier.verify(await sign({ ...base, aud: 'other' }, { kid })), /aud/);
    await assert.rejects(verifier.verify(await sign({ ...base, iss: 'evil' }, { kid })), /iss/);
    await assert.rejects(verifier.verify(await sign({ ...base, exp: undefined }, { kid })), /exp/);
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await assert.rejects(verifier.verify(await sign(base, { kid: libtrustKeyId(stranger) }, stranger)), /unknown signing key/);
    await assert.rejects(verifier.verify(await sign(base, { kid }, stranger)), /signature/, 'a known kid with another key');
    const good = await sign(base, { kid });
    const [h, , s] = good.split('.');
    const forged = Buffer.from(JSON.stringify({ ...base, access: [{ type: 'repository', name: 'a', actions: ['*'] }] })).toString('base64url');
    await assert.rejects(verifier.verify(`${h}.${forged}.${s}`), /signature/);
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', kid })).toString('base64url')}.${Buffer.from(JSON.stringify(base)).toString('base64url')}.`;
    await assert.rejects(verifier.verify(none), /algorithm none/);
    const hs = await new SignJWT(base).setProtectedHeader({ alg: 'HS256', kid }).sign(new TextEncoder().encode('k'));
    await assert.rejects(verifier.verify(hs), /algorithm HS256/);
    await assert.rejects(verifier.verify('not.a.token'), TokenError);
    await assert.rejects(verifier.verify(await sign(base, {})), /names no signing key/);
  });

  test('keys found by jwk header (trusted only), by JWKS kid, and by x5c chain to the root bundle', async () => {
    const base = { iss, aud: service, sub: 'bob', access, exp: now() + 300 };
    const jwk = signer.export({ format: 'jwk' }) as JWK;
    delete jwk.d;
    assert.equal((await verifier.verify(await sign(base, { jwk }))).subject, 'bob');
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const strangerJwk = stranger.export({ format: 'jwk' }) as JWK;
    delete strangerJwk.d;
    await assert.rejects(verifier.verify(await sign(base, { jwk: strangerJwk }, stranger)), /not trusted/);

    // JWKS with a kid of the issuer's choosing.
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const jwks = join(dir, 'jwks.json');
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(rsa.export({ format: 'jwk' }) as JWK), d: undefined, p: undefined, q: undefined, dp: undefined, dq: undefined, qi: undefined, kid: 'my-key-1' }] }));
    const v2 = new TokenVerifier({ issuer: iss, service, trusted: loadTrustedKeys({ jwks }) });
    assert.equal((await v2.verify(await sign(base, { kid: 'my-key-1' }, rsa, 'RS256'))).subject, 'bob');
    const v3 = new TokenVerifier({ issuer: iss, service, trusted: loadTrustedKeys({ jwks }), algorithms: ['ES256'] });
    await assert.rejects(v3.verify(await sign(base, { kid: 'my-key-1' }, rsa, 'RS256')), /algorithm RS256/);

    // A CA and a leaf signed by it (openssl), the leaf's chain in x5c.
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test root');
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=token signer');
    ssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '1');
    const der = (pem: string): string => pem.replace(/-----[^-]+-----|\s/g, '');
    const leafKey = createPrivateKey(readFileSync(join(dir, 'leaf.key')));
    const x5c = [der(readFileSync(join(dir, 'leaf.pem'), 'utf8')), der(readFileSync(join(dir, 'ca.pem'), 'utf8'))];
    const v4 = new TokenVerifier({ issuer: iss, service, trusted: loadTrustedKeys({ rootcertbundle: join(dir, 'ca.pem') }) });
    assert.equal((await v4.verify(await sign(base, { x5c }, leafKey))).subject, 'bob');
    assert.equal((await v4.verify(await sign(base, { x5c: x5c.slice(0, 1) }, leafKey))).subject, 'bob', 'leaf alone, issued by a root');
    await assert.rejects(v4.verify(await sign(base, { x5c }, stranger)), /signature/);
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'other.key', '-out', 'other.pem', '-days', '2', '-subj', '/CN=other root');
    const v5 = new TokenVerifier({ issuer: iss, service, trusted: loadTrustedKeys({ rootcertbundle: join(dir, 'other.pem') }) });
    await assert.rejects(v5.verify(await sign(base, { x5c }, leafKey)), /trusted root/);
    // The bundle's own key, named by its libtrust id (distribution 2.8-era token servers).
    const caKey = createPrivateKey(readFileSync(join(dir, 'ca.key')));
    assert.equal((await v4.verify(await sign(base, { kid: libtrustKeyId(caKey) }, caKey))).subject, 'bob');
  });
});
