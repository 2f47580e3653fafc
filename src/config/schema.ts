/**
 * distribution's config.yml schema, as far as Berth implements it, as data: the validator, the
 * REGISTRY_* override matcher and `berth config check` all walk this one tree.
 */
export type Schema =
  | { kind: 'object'; keys: Record<string, Schema>; /** Keys not listed are accepted without warning. */ open?: boolean }
  | { kind: 'map'; of: Schema }
  | { kind: 'list'; of: Schema }
  | { kind: 'string'; enum?: readonly string[] }
  | { kind: 'bool' }
  | { kind: 'int'; min?: number }
  | { kind: 'duration' }
  | { kind: 'any' };

const str = (e?: readonly string[]): Schema => (e ? { kind: 'string', enum: e } : { kind: 'string' });
const bool: Schema = { kind: 'bool' };
const int = (min = 0): Schema => ({ kind: 'int', min });
const duration: Schema = { kind: 'duration' };
const any: Schema = { kind: 'any' };
const obj = (keys: Record<string, Schema>, open = false): Schema => ({ kind: 'object', keys, open });
const list = (of: Schema): Schema => ({ kind: 'list', of });
const map = (of: Schema): Schema => ({ kind: 'map', of });

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;

export const CONFIG_SCHEMA: Schema = obj({
  version: str(),
  log: obj({
    level: str(LOG_LEVELS),
    formatter: str(['json', 'text', 'logstash']),
    fields: map(any),
    accesslog: obj({ disabled: bool }),
    reportcaller: bool,
    hooks: any,
  }),
  loglevel: str(LOG_LEVELS),
  storage: obj({
    filesystem: obj({ rootdirectory: str(), maxthreads: int(25) }),
    inmemory: any,
    s3: obj({
      accesskey: str(),
      secretkey: str(),
      sessiontoken: str(),
      region: str(),
      regionendpoint: str(),
      forcepathstyle: bool,
      bucket: str(),
      encrypt: bool,
      keyid: str(),
      secure: bool,
      skipverify: bool,
      v4auth: bool,
      chunksize: int(5 * 1024 * 1024),
      multipartcopychunksize: int(5 * 1024 * 1024),
      multipartcopymaxconcurrency: int(1),
      multipartcopythresholdsize: int(0),
      rootdirectory: str(),
      storageclass: str(['STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER_IR', 'NONE']),
      objectacl: str(),
      useragent: str(),
      usedualstack: bool,
      accelerate: bool,
      loglevel: any,
    }),
    gcs: obj({}, true),
    azure: obj({}, true),
    delete: obj({ enabled: bool }),
    redirect: obj({ disable: bool }),
    cache: obj({ blobdescriptor: str(['inmemory', 'redis']), blobdescriptorsize: int(1) }),
    maintenance: obj({
      uploadpurging: obj({ enabled: bool, age: duration, interval: duration, dryrun: bool }),
      readonly: obj({ enabled: bool }),
    }),
    tag: obj({ concurrencylimit: int(1) }),
  }),
  auth: obj({
    htpasswd: obj({ realm: str(), path: str() }),
    token: obj({
      realm: str(),
      service: str(),
      issuer: str(),
      rootcertbundle: str(),
      jwks: str(),
      autoredirect: bool,
      autoredirectpath: str(),
      signingalgorithms: list(str()),
      /** Berth: the built-in token server (distribution's `issuer` key is the iss string, so this has its own name). */
      builtin: obj({ path: str(), htpasswd: str(), rules: str(), key: str(), expiration: duration }),
    }),
    silly: obj({}, true),
    none: any,
  }),
  middleware: obj({}, true),
  http: obj({
    addr: str(),
    net: str(['tcp', 'unix']),
    host: str(),
    prefix: str(),
    secret: str(),
    relativeurls: bool,
    draintimeout: duration,
    headers: map(list(str())),
    tls: obj({
      certificate: str(),
      key: str(),
      clientcas: list(str()),
      clientauth: str(['require-and-verify-client-cert', 'verify-client-cert-if-given']),
      minimumtls: str(['tls1.0', 'tls1.1', 'tls1.2', 'tls1.3']),
      ciphersuites: list(str()),
      letsencrypt: obj({}, true),
    }),
    debug: obj({ addr: str(), prometheus: obj({ enabled: bool, path: str() }) }),
    http2: obj({ disabled: bool }),
    h2c: obj({ enabled: bool }),
    /** Berth: worker processes sharing the port (default 1; 0 = one per CPU). */
    workers: int(0),
    /** Berth: how long a client may take before its connection is closed. */
    timeouts: obj({ header: duration, idle: duration, stall: duration }),
    /** Berth: connection and header limits. */
    limits: obj({ maxconnections: int(0), maxheaderbytes: int(1024) }),
  }),
  notifications: obj({}, true),
  redis: obj({
    addr: str(),
    addrs: list(str()),
    username: str(),
    password: str(),
    db: int(0),
    dialtimeout: duration,
    readtimeout: duration,
    writetimeout: duration,
    pool: obj({ maxidle: int(0), maxactive: int(0), idletimeout: duration, size: int(0), maxlifetime: duration, minidleconns: int(0) }),
    tls: obj({ enabled: bool, certificate: str(), key: str(), clientcas: list(str()) }),
  }),
  health: obj({}, true),
  proxy: obj({}, true),
  validation: obj({}, true),
  policy: obj({}, true),
  reporting: obj({}, true),
  catalog: obj({ maxentries: int(1) }),
  tags: obj({ maxtags: int(1) }),
});
