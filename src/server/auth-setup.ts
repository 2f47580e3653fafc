/**
 * Builds the access controller (and the built-in token server) from `auth`, through an explicit table of
 * schemes. The built-in server's signing key is loaded from `builtin.key` (created there when missing) or,
 * without one, settled once in storage so that every worker and instance signs with the same key.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { AuthConfig, BerthConfig } from '../config/config.ts';
import { htpasswdAuthorizer, tokenAuthorizer, type Authorizer } from '../auth/authorizer.ts';
import { Htpasswd } from '../auth/htpasswd.ts';
import { addKey, loadTrustedKeys } from '../auth/keys.ts';
import { RulesFile } from '../auth/rules.ts';
import { TokenIssuer, TokenVerifier } from '../auth/token.ts';
import { isNotFound, type StorageDriver } from '../storage/driver.ts';
import type { ExtraEndpoint } from './app.ts';
import { tokenEndpoint } from './token-server.ts';

const KEY_PATH = '/berth/token-key.pem';
/** The first process hands the settled key to the workers it forks through this variable. */
export const TOKEN_KEY_ENV = 'BERTH_TOKEN_KEY';

export interface AuthSetup {
  auth?: Authorizer;
  tokenEndpoint?: ExtraEndpoint;
  /** The built-in server's public key set, for registries elsewhere (`auth.token.jwks`). */
  jwks?: unknown;
}

function newKeyPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
}

/** The built-in token server's key as PEM, when one is configured; undefined when auth has no built-in server. */
export async function loadTokenKeyPem(config: BerthConfig, driver: StorageDriver, log: Logger): Promise<string | undefined> {
  const b = config.auth?.kind === 'token' ? config.auth.builtin : undefined;
  if (!b) return undefined;
  if (b.key) {
    if (existsSync(b.key)) return readFileSync(b.key, 'utf8');
    const pem = newKeyPem();
    const tmp = `${b.key}.${randomBytes(6).toString('hex')}.tmp`;
    writeFileSync(tmp, pem, { mode: 0o600 });
    renameSync(tmp, b.key);
    log.warn({ path: b.key }, 'generated a token signing key');
    return pem;
  }
  if (process.env[TOKEN_KEY_ENV]) return process.env[TOKEN_KEY_ENV];
  try {
    return (await driver.getContent(KEY_PATH, { maxSize: 64 * 1024 })).toString('utf8');
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
  const pem = newKeyPem();
  await driver.putContent(KEY_PATH, Buffer.from(pem));
  log.warn('auth.token.builtin.key is not set; generated a signing key and stored it in the storage root');
  return pem;
}

const SCHEMES: { [K in AuthConfig['kind']]: (a: Extract<AuthConfig, { kind: K }>, log: Logger, keyPem?: string) => AuthSetup } = {
  htpasswd: (a, log) => ({ auth: htpasswdAuthorizer(new Htpasswd(a.path, (p) => log.warn({ file: a.path, problems: p }, 'htpasswd: entries ignored')), a.realm) }),
  token: (a, log, keyPem) => {
    const trusted = a.rootcertbundle || a.jwks ? loadTrustedKeys({ ...(a.rootcertbundle ? { rootcertbundle: a.rootcertbundle } : {}), ...(a.jwks ? { jwks: a.jwks } : {}) }) : { roots: [], keys: new Map<string, KeyObject>() };
    const out: AuthSetup = {};
    if (a.builtin) {
      if (!keyPem) throw new Error('auth.token.builtin: no signing key');
      const issuer = new TokenIssuer({ issuer: a.issuer, key: createPrivateKey(keyPem), expiration: a.builtin.expirationSeconds });
      addKey(trusted, issuer.publicKey, issuer.kid);
      const users = new Htpasswd(a.builtin.htpasswd, (p) => log.warn({ file: a.builtin!.htpasswd, problems: p }, 'htpasswd: entries ignored'));
      const rules = new RulesFile(a.builtin.rules, (m) => log.error(m));
      out.jwks = issuer.jwks();
      out.tokenEndpoint = tokenEndpoint({ path: a.builtin.path, service: a.service, realm: 'Berth token server', issuer, users, rules, log });
    }
    const verifier = new TokenVerifier({ issuer: a.issuer, service: a.service, trusted, ...(a.signingalgorithms ? { algorithms: a.signingalgorithms } : {}) });
    out.auth = tokenAuthorizer({ realm: a.realm, autoredirect: a.autoredirect, service: a.service, verifier });
    return out;
  },
};

export function buildAuth(config: BerthConfig, log: Logger, keyPem?: string): AuthSetup {
  const a = config.auth;
  if (!a) return {};
  return (SCHEMES[a.kind] as (a: AuthConfig, log: Logger, keyPem?: string) => AuthSetup)(a, log, keyPem);
}
