import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG_YAML, loadConfig, loadConfigText } from './config.ts';
import { parseDuration } from './duration.ts';

test('the embedded default: filesystem under ./data, :5000, deletes enabled', () => {
  const { config, warnings } = loadConfigText(DEFAULT_CONFIG_YAML, {});
  assert.deepEqual(warnings, []);
  assert.equal(config.storage.driver, 'filesystem');
  assert.equal(config.storage.rootdirectory, './data');
  assert.equal(config.http.addr, ':5000');
  assert.equal(config.storage.deleteEnabled, true);
});

test("distribution's defaults: root /var/lib/registry, deletes off, maxentries 1000, purging 168h/24h", () => {
  const { config } = loadConfigText('version: 0.1\nstorage:\n  filesystem: {}\n', {});
  assert.equal(config.storage.rootdirectory, '/var/lib/registry');
  assert.equal(config.storage.deleteEnabled, false);
  assert.equal(config.catalog.maxentries, 1000);
  assert.equal(config.storage.uploadPurging.ageMs, 168 * 3600_000);
  assert.equal(config.storage.uploadPurging.intervalMs, 24 * 3600_000);
});

test('REGISTRY_* overrides: nested keys, case-insensitive, YAML values, driver selection', () => {
  const yaml = 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /a\nhttp:\n  addr: :5000\n';
  const { config } = loadConfigText(yaml, {
    REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/b',
    REGISTRY_HTTP_ADDR: '127.0.0.1:6000',
    REGISTRY_STORAGE_DELETE_ENABLED: 'true',
    REGISTRY_HTTP_TLS_CLIENTCAS_0: '/ca.pem',
    REGISTRY_HTTP_TLS_CERTIFICATE: '/c.pem',
    REGISTRY_HTTP_TLS_KEY: '/k.pem',
    REGISTRY_LOG_LEVEL: 'debug',
  });
  assert.equal(config.storage.rootdirectory, '/b');
  assert.equal(config.http.addr, '127.0.0.1:6000');
  assert.equal(config.storage.deleteEnabled, true);
  assert.deepEqual(config.http.tls?.clientcas, ['/ca.pem']);
  assert.equal(config.log.level, 'debug');
  const mem = loadConfigText(yaml, { REGISTRY_STORAGE: 'inmemory' });
  assert.equal(mem.config.storage.driver, 'inmemory');
});

test('unknown keys are warnings naming them; invalid values are errors naming key and expectation', () => {
  const { warnings } = loadConfigText('version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: :1\n  nope: 1\nfrobnicate: true\n', {});
  assert.ok(warnings.some((w) => w.includes('http.nope')));
  assert.ok(warnings.some((w) => w.includes('frobnicate')));
  const bad = (yaml: string, re: RegExp): void => {
    assert.throws(() => loadConfigText(yaml, {}), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  };
  bad('storage:\n  inmemory: {}\n  delete:\n    enabled: yes please\n', /storage\.delete\.enabled: expected true or false/);
  bad('storage:\n  inmemory: {}\ncatalog:\n  maxentries: -4\n', /catalog\.maxentries: expected an integer/);
  bad('storage:\n  inmemory: {}\n  maintenance:\n    uploadpurging:\n      age: forever\n', /uploadpurging\.age: expected a duration/);
  bad('storage:\n  filesystem: {}\n  inmemory: {}\n', /exactly one driver/);
  bad('storage: {}\n', /exactly one driver/);
  bad('log:\n  level: loud\nstorage:\n  inmemory: {}\n', /log\.level: expected one of/);
  bad('storage:\n  inmemory: {}\nhttp:\n  tls:\n    certificate: /c.pem\n', /http\.tls: expected both/);
  bad(': : :\n  - [', /not valid YAML/);
  bad('storage:\n  inmemory: {}\nhttp:\n  addr: nowhere\n', /http\.addr: expected host:port/);
  bad('storage:\n  inmemory: {}\nauth:\n  silly:\n    realm: r\n', /auth\.silly: not supported/);
  bad('storage:\n  inmemory: {}\nauth:\n  token:\n    realm: r\n    service: s\n    issuer: i\n', /rootcertbundle or jwks is required/);
  bad('storage:\n  inmemory: {}\nauth:\n  htpasswd:\n    realm: r\n', /auth\.htpasswd\.path: required/);
});

test('Go durations', () => {
  assert.equal(parseDuration('168h'), 168 * 3600_000);
  assert.equal(parseDuration('1h30m'), 90 * 60_000);
  assert.equal(parseDuration('300ms'), 300);
  assert.equal(parseDuration('0'), 0);
  assert.equal(parseDuration(5_000_000_000), 5000);
  assert.equal(parseDuration('10'), undefined);
  assert.equal(parseDuration('1d'), undefined);
});

test('the configuration path may come from REGISTRY_CONFIGURATION_PATH; an explicit path wins', () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-cfgpath-'));
  try {
    const a = join(dir, 'a.yml');
    const b = join(dir, 'b.yml');
    writeFileSync(a, 'version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: :7001\n');
    writeFileSync(b, 'version: 0.1\nstorage:\n  inmemory: {}\nhttp:\n  addr: :7002\n');
    assert.equal(loadConfig(undefined, { REGISTRY_CONFIGURATION_PATH: a }).config.http.addr, ':7001');
    assert.equal(loadConfig(b, { REGISTRY_CONFIGURATION_PATH: a }).config.http.addr, ':7002');
    assert.equal(loadConfig(undefined, {}).source, '(embedded default)');
    assert.throws(() => loadConfig(join(dir, 'missing.yml'), {}), /cannot read configuration file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("storage.s3 takes distribution's keys, with REGISTRY_STORAGE_S3_* overrides and required bucket/region", () => {
  const yaml = `version: 0.1
storage:
  s3:
    region: eu-west-1
    bucket: reg
    regionendpoint: minio.local:9000
    forcepathstyle: true
    secure: false
    skipverify: true
    chunksize: 6291456
    rootdirectory: /prefix
    storageclass: REDUCED_REDUNDANCY
    encrypt: true
    keyid: kms-key
    v4auth: true
  redirect:
    disable: true
  cache:
    blobdescriptor: redis
redis:
  addrs: [redis-a:6379, redis-b:6379]
  password: pw
  db: 2
  dialtimeout: 2s
`;
  const { config, warnings } = loadConfigText(yaml, { REGISTRY_STORAGE_S3_ACCESSKEY: 'AK', REGISTRY_STORAGE_S3_SECRETKEY: 'SK', REGISTRY_STORAGE_S3_BUCKET: 'other' });
  assert.deepEqual(warnings, []);
  assert.equal(config.storage.driver, 's3');
  assert.deepEqual(config.storage.s3, {
    bucket: 'other',
    region: 'eu-west-1',
    regionendpoint: 'minio.local:9000',
    forcepathstyle: true,
    accesskey: 'AK',
    secretkey: 'SK',
    rootdirectory: '/prefix',
    secure: false,
    skipverify: true,
    chunksize: 6291456,
    multipartcopychunksize: 32 * 1024 * 1024,
    multipartcopythresholdsize: 32 * 1024 * 1024,
    storageclass: 'REDUCED_REDUNDANCY',
    encrypt: true,
    keyid: 'kms-key',
  });
  assert.equal(config.storage.redirectDisabled, true);
  assert.equal(config.storage.blobDescriptorCache, 'redis');
  assert.deepEqual(config.redis, { addr: 'redis-a:6379', password: 'pw', db: 2, dialTimeoutMs: 2000, tls: false });
  assert.throws(() => loadConfigText('storage:\n  s3:\n    bucket: b\n'), (e: unknown) => e instanceof ConfigError && e.problems.includes('storage.s3.region: required'));
  assert.throws(() => loadConfigText('storage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1000\n'), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.startsWith('storage.s3.chunksize')));
  assert.throws(
    () => loadConfigText('storage:\n  filesystem:\n    rootdirectory: /x\n  cache:\n    blobdescriptor: redis\n'),
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.startsWith('redis.addr')),
  );
  // REGISTRY_STORAGE=s3 switches the driver and keeps the other storage keys.
  const sw = loadConfigText('storage:\n  filesystem:\n    rootdirectory: /x\n  delete:\n    enabled: true\n', { REGISTRY_STORAGE: 's3', REGISTRY_STORAGE_S3_BUCKET: 'b', REGISTRY_STORAGE_S3_REGION: 'r' });
  assert.equal(sw.config.storage.driver, 's3');
  assert.equal(sw.config.storage.deleteEnabled, true);
});

test('http.timeouts and http.limits: safe defaults, durations, overrides, and validation', () => {
  const d = loadConfigText('version: 0.1\nstorage:\n  filesystem: {}\n', {}).config.http;
  assert.deepEqual(d.timeouts, { headerMs: 60_000, idleMs: 65_000, stallMs: 300_000 });
  assert.deepEqual(d.limits, { maxConnections: 0, maxHeaderBytes: 16_384 });
  const yaml = 'version: 0.1\nstorage:\n  filesystem: {}\nhttp:\n  timeouts:\n    header: 10s\n    stall: 15m\n  limits:\n    maxconnections: 5000\n';
  const c = loadConfigText(yaml, { REGISTRY_HTTP_TIMEOUTS_IDLE: '2m', REGISTRY_HTTP_LIMITS_MAXHEADERBYTES: '32768' }).config.http;
  assert.deepEqual(c.timeouts, { headerMs: 10_000, idleMs: 120_000, stallMs: 900_000 });
  assert.deepEqual(c.limits, { maxConnections: 5000, maxHeaderBytes: 32_768 });
  assert.throws(() => loadConfigText('version: 0.1\nstorage:\n  filesystem: {}\nhttp:\n  timeouts:\n    stall: soon\n', {}), ConfigError);
  assert.throws(() => loadConfigText('version: 0.1\nstorage:\n  filesystem: {}\nhttp:\n  limits:\n    maxheaderbytes: 10\n', {}), ConfigError);
});
