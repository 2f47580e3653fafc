/** Image reference parsing of the client commands (src/cli/reference.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isLoopback, parseImageRef, parseRegistry, registryUrl, UsageError } from '../../src/cli/reference.ts';

const D = `sha256:${'a'.repeat(64)}`;

test('host[:port]/repo[:tag][@digest], docker:// prefix, latest by default, Docker Hub names', () => {
  assert.deepEqual(parseImageRef('localhost:5000/team/app'), { registry: 'localhost:5000', repo: 'team/app', tag: 'latest', ref: 'latest', defaulted: true });
  assert.deepEqual(parseImageRef('docker://reg.example.com/a/b/c:v1.2'), { registry: 'reg.example.com', repo: 'a/b/c', tag: 'v1.2', ref: 'v1.2', defaulted: false });
  assert.deepEqual(parseImageRef(`127.0.0.1:5000/app:v1@${D}`), { registry: '127.0.0.1:5000', repo: 'app', tag: 'v1', digest: D, ref: D, defaulted: false });
  assert.deepEqual(parseImageRef(`127.0.0.1:5000/app@${D}`), { registry: '127.0.0.1:5000', repo: 'app', digest: D, ref: D, defaulted: false });
  assert.equal(parseImageRef('alpine').repo, 'library/alpine');
  assert.equal(parseImageRef('alpine').registry, 'docker.io');
  assert.equal(parseImageRef('team/app:1').registry, 'docker.io');
  assert.equal(parseImageRef('localhost/app').registry, 'localhost');
  assert.equal(parseImageRef('[::1]:5000/app').registry, '[::1]:5000');
  assert.deepEqual(parseImageRef('localhost:5000/team/app', { repoOnly: true }), { registry: 'localhost:5000', repo: 'team/app', ref: '', defaulted: false });
  for (const bad of ['', 'localhost:5000/Team/app', 'localhost:5000/app:-x', 'localhost:5000/app@sha256:xyz', 'a b', 'localhost:5000/app//x']) {
    assert.throws(() => parseImageRef(bad), UsageError, bad);
  }
  assert.throws(() => parseImageRef('localhost:5000/app:v1', { repoOnly: true }), UsageError);
});

test('registries: plain HTTP on the loopback by default, HTTPS elsewhere unless --plain-http', () => {
  assert.equal(parseRegistry('localhost:5000'), 'localhost:5000');
  assert.equal(parseRegistry('http://127.0.0.1:5000/'), 'http://127.0.0.1:5000');
  assert.throws(() => parseRegistry('localhost:5000/repo'), UsageError);
  for (const h of ['localhost', 'localhost:5000', 'reg.localhost:80', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) assert.ok(isLoopback(h), h);
  for (const h of ['reg.example.com', '10.0.0.1:5000', 'localhost.example.com']) assert.ok(!isLoopback(h), h);
  assert.equal(registryUrl('127.0.0.1:5000'), 'http://127.0.0.1:5000');
  assert.equal(registryUrl('reg.example.com'), 'https://reg.example.com');
  assert.equal(registryUrl('reg.example.com', { plainHttp: true }), 'http://reg.example.com');
  assert.equal(registryUrl('docker.io'), 'https://registry-1.docker.io');
  assert.equal(registryUrl('https://127.0.0.1:5000'), 'https://127.0.0.1:5000');
});
