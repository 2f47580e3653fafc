/**
 * `berth login`/`logout` against an htpasswd-protected Berth (the login store under a temporary
 * XDG_CONFIG_HOME), and usage errors (exit 2, no stack trace) that need no registry.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { htpasswdSet } from '../../src/auth/htpasswd.ts';
import { startBerth, type RunningRegistry } from '../helpers/servers.ts';
import { berth, berthOk } from './cli.ts';

const PW = 'alice-Secret-1';

describe('login and logout against htpasswd-protected Berth', () => {
  let tmp: string;
  let reg: RunningRegistry;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'berth-cli-login-'));
    const htpasswd = join(tmp, 'htpasswd');
    htpasswdSet(htpasswd, 'alice', PW);
    reg = await startBerth({ extraYaml: `auth:\n  htpasswd:\n    realm: test\n    path: ${htpasswd}\n` });
    // No docker config or home directory credentials may leak in.
    env = { XDG_CONFIG_HOME: join(tmp, 'config'), DOCKER_CONFIG: join(tmp, 'docker'), HOME: tmp };
  });
  after(async () => {
    await reg.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('anonymous is refused; a wrong password does not log in; the right one is stored (0600) and used; logout forgets it', async () => {
    const file = join(tmp, 'blob.txt');
    writeFileSync(file, 'hello from the cli login test\n');
    const [anon, wrong, noStdin] = await Promise.all([
      berth(['blob', 'put', `${reg.host}/team/private`, file], { env }),
      berth(['login', '-u', 'alice', '--password-stdin', reg.host], { env, input: 'not-the-password\n' }),
      berth(['login', '-u', 'alice', reg.host], { env }),
    ]);
    assert.equal(anon.code, 1);
    assert.match(anon.stderr, /: HTTP 401 \(credentials refused or missing: berth login <registry>\)/);
    assert.match(anon.stderr, /berth login/);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^berth: GET http:\/\/127\.0\.0\.1:\d+\/v2\/: UNAUTHORIZED/);
    assert.doesNotMatch(wrong.stderr, /not-the-password/);
    assert.equal(noStdin.code, 2, 'no terminal and no --password-stdin is a usage error');

    const ok = await berthOk(['login', '--username', 'alice', '--password-stdin', `http://${reg.host}`], { env, input: `${PW}\n` });
    assert.match(ok.stdout, /^Login succeeded: alice@127\.0\.0\.1:\d+/);
    const store = join(tmp, 'config', 'berth', 'auth.json');
    assert.equal(statSync(store).mode & 0o777, 0o600);
    assert.ok(readFileSync(store, 'utf8').includes(reg.host));

    const put = await berthOk(['blob', 'put', `${reg.host}/team/private`, file, '--quiet'], { env });
    assert.match(put.stdout, /^sha256:[0-9a-f]{64}\n$/);
    assert.equal(put.stderr, '', '--quiet: no progress lines');

    const out = await berthOk(['logout', reg.host, '--json'], { env });
    assert.deepEqual(JSON.parse(out.stdout), { registry: reg.host, removed: true });
    const after = await berth(['catalog', reg.host], { env });
    assert.equal(after.code, 1);
    assert.match(after.stderr, /UNAUTHORIZED/);
  });
});

test('usage errors exit 2 with a message and no stack trace; --help exits 0', async () => {
  const runs = await Promise.all([
    berth(['tags']),
    berth(['inspect', '127.0.0.1:1/Bad Name:x']),
    berth(['blob', 'get', '127.0.0.1:1/repo:v1']),
    berth(['catalog', '--frobnicate', '127.0.0.1:1']),
    berth(['delete', '127.0.0.1:1/repo']),
    berth(['manifest', 'frob']),
    berth(['attach', '127.0.0.1:1/repo:v1', 'file']),
  ]);
  for (const r of runs) {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^berth: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
  assert.match(runs[0]!.stderr, /usage: berth tags/);
  assert.match(runs[4]!.stderr, /explicit :TAG or @DIGEST/);
  const help = await berth(['inspect', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: berth inspect IMAGE/);
  // Network failures are errors (1), not usage errors, and name the request.
  const refused = await berth(['tags', '127.0.0.1:1/repo']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^berth: GET http:\/\/127\.0\.0\.1:1\/v2\/repo\/tags\/list: .*ECONNREFUSED/);
});
