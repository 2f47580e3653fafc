/**
 * `berth/testing`: an in-process Berth for your own tests, so code using `berth/client` (or any OCI client)
 * is tested against a real registry instead of mocks.
 *
 * ```ts
 * import { startTestRegistry } from 'berth/testing';
 * const reg = await startTestRegistry();
 * await reg.client.putManifest('team/app', 'v1', manifest);
 * await reg.close();
 * ```
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigText } from '../config/config.ts';
import { startServer } from '../server/serve.ts';
import { RegistryClient, type ClientOptions } from '../client/index.ts';

export interface TestRegistryOptions {
  /** `inmemory` (default) or `filesystem` (a temp directory removed on close, unless `root` is given). */
  storage?: 'inmemory' | 'filesystem';
  /** Storage root for `filesystem` (kept on close). */
  root?: string;
  /** Allow deletes (default true). */
  deleteEnabled?: boolean;
  /** Extra top-level YAML appended to the configuration (e.g. an `auth:` section). */
  extraYaml?: string;
  /** Log level (default `error`, so tests stay quiet). */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** Options of the returned client (`registry` and `insecure` are set). */
  client?: Omit<ClientOptions, 'registry'>;
}

export interface TestRegistry {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>`, for references like `127.0.0.1:5000/team/app:v1`. */
  host: string;
  port: number;
  /** The storage root (filesystem storage only). */
  root?: string;
  /** A client for this registry (anonymous unless `client.credentials` says otherwise). */
  client: RegistryClient;
  /** Stops the server, closes the client's connections and removes temporary storage. */
  close(): Promise<void>;
}

/** Starts Berth in this process on a free loopback port (plain HTTP). */
export async function startTestRegistry(o: TestRegistryOptions = {}): Promise<TestRegistry> {
  const storage = o.storage ?? (o.root ? 'filesystem' : 'inmemory');
  const tmp = storage === 'filesystem' && !o.root ? mkdtempSync(join(tmpdir(), 'berth-testing-')) : undefined;
  const root = o.root ?? (tmp ? join(tmp, 'data') : undefined);
  const storageYaml = storage === 'filesystem' ? `  filesystem:\n    rootdirectory: ${JSON.stringify(root)}\n` : '  inmemory: {}\n';
  const yaml = `version: 0.1
log:
  level: ${o.logLevel ?? 'error'}
  accesslog:
    disabled: true
storage:
${storageYaml}  delete:
    enabled: ${o.deleteEnabled ?? true}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: berth-test-registry
${o.extraYaml ?? ''}`;
  const { config } = loadConfigText(yaml, {});
  const server = await startServer(config);
  const host = `127.0.0.1:${server.port}`;
  const url = `http://${host}`;
  const client = new RegistryClient({ credentials: 'none', ...o.client, registry: url });
  return {
    url,
    host,
    port: server.port,
    ...(root ? { root } : {}),
    client,
    async close() {
      client.close();
      await server.close();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    },
  };
}
