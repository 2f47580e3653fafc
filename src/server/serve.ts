/**
 * The composition root: builds the driver, registry and HTTP(S) server from a BerthConfig, listens,
 * purges stale uploads, and drains in-flight requests on SIGTERM/SIGINT.
 */
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { SecureVersion } from 'node:tls';
import type { Logger } from 'pino';
import type { BerthConfig } from '../config/config.ts';
import type { Registry } from '../registry/registry.ts';
import { createApp, responseClass } from './app.ts';
import { createLogger, type DriverWrapper, loadSecret, openRegistry, parseAddr } from './setup.ts';

export { createLogger, type DriverWrapper, loadSecret, openRegistry, parseAddr };

export interface RunningServer {
  server: Server;
  registry: Registry;
  /** `http://127.0.0.1:5000`-style base URL of the listener. */
  url: string;
  port: number;
  /** Stops accepting, waits for in-flight requests up to the drain timeout, then closes everything. */
  close(): Promise<void>;
}

export interface StartOptions {
  /**
   * Accept on the listening socket this returns (passed by the first process) instead of binding http.addr.
   * Called once everything else is ready, and the server takes the socket over in the same tick as the
   * promise settles: a socket handed to a process is accepted on from the moment it arrives, and a connection
   * accepted before this server owned it would be left unanswered.
   */
  handle?: () => Promise<import('node:net').Server>;
  /** Wraps the configured storage driver (see {@link DriverWrapper}). */
  wrapDriver?: DriverWrapper;
}

export async function startServer(config: BerthConfig, log: Logger = createLogger(config), opts: StartOptions = {}): Promise<RunningServer> {
  const registry = openRegistry(config, log, opts.wrapDriver);
  const secret = await loadSecret(config, registry.driver, log);
  // Authentication code (JWT, bcrypt) is loaded only when configured.
  const { auth, tokenEndpoint } = config.auth
    ? await import('./auth-setup.ts').then(async (m) => m.buildAuth(config, log, await m.loadTokenKeyPem(config, registry.driver, log)))
    : {};
  const app = createApp({
    ...(auth ? { auth } : {}),
    ...(tokenEndpoint ? { tokenEndpoint } : {}),
    registry,
    secret,
    prefix: config.http.prefix,
    ...(config.http.host ? { host: config.http.host } : {}),
    relativeurls: config.http.relativeurls,
    maxCatalogEntries: config.catalog.maxentries,
    ...(config.tags.maxtags ? { maxTags: config.tags.maxtags } : {}),
    log,
    accessLog: config.log.accesslog,
    readonly: config.storage.readonly,
  });
  const tls = config.http.tls;
  const { timeouts, limits } = config.http;
  // Node checks header and request deadlines on this interval (default 30 s): keep it well under the deadline.
  const serverOptions = {
    ServerResponse: responseClass(config.http.headers),
    maxHeaderSize: limits.maxHeaderBytes,
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor((timeouts.headerMs || 60_000) / 4))),
  };
  const server: Server = tls
    ? createHttpsServer(
        {
          ...serverOptions,
          cert: readFileSync(tls.certificate),
          key: readFileSync(tls.key),
          minVersion: tls.minimumtls.replace('tls', 'TLSv') as SecureVersion,
          ...(tls.clientcas.length > 0 ? { ca: tls.clientcas.map((f) => readFileSync(f)), requestCert: true, rejectUnauthorized: true } : {}),
        },
        app,
      )
    : createHttpServer(serverOptions, app);
  // No deadline for a whole request: Node's 300 s default would cut off a slow multi-gigabyte upload that keeps
  // making progress. Instead: the head must arrive within `header`, a kept-alive connection may idle for `idle`,
  // and a connection in the middle of a request is closed after `stall` without a byte moving either way.
  server.requestTimeout = 0;
  server.headersTimeout = timeouts.headerMs;
  server.timeout = timeouts.stallMs;
  server.keepAliveTimeout = timeouts.idleMs;
  server.maxHeadersCount = 200;
  if (limits.maxConnections > 0) server.maxConnections = limits.maxConnections;

  const { host, port } = parseAddr(config.http.addr);
  const handle = opts.handle ? await opts.handle() : undefined;
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    const listening = (): void => {
      server.off('error', fail);
      ok();
    };
    if (handle) server.listen(handle, listening);
    else server.listen({ port, ...(host ? { host } : {}), backlog: 1024 }, listening);
  });
  const a = server.address() as AddressInfo;
  const shownHost = a.family === 'IPv6' ? (a.address === '::' ? 'localhost' : `[${a.address}]`) : a.address === '0.0.0.0' ? 'localhost' : a.address;
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${a.port}`;
  log.info({ msg: 'listening', url, port: a.port, storage: config.storage.driver, rootdirectory: config.storage.driver === 'filesystem' ? resolve(config.storage.rootdirectory) : undefined, readonly: config.storage.readonly });

  let purgeTimer: NodeJS.Timeout | undefined;
  const purging = config.storage.uploadPurging;
  if (purging.enabled && !config.storage.readonly) {
    const run = (): void => {
      registry
        .purgeUploads(purging.ageMs, purging.dryrun)
        .then((r) => {
          if (r.purged.length > 0) log.info({ msg: 'upload purge', purged: r.purged.length, dryrun: purging.dryrun });
        })
        .catch((e: unknown) => log.error({ err: e }, 'upload purge failed'))
        .finally(() => {
          purgeTimer = setTimeout(run, purging.intervalMs).unref();
        });
    };
    purgeTimer = setTimeout(run, Math.min(purging.intervalMs, 5_000 + Math.random() * 25_000)).unref();
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((done) => {
      if (purgeTimer) clearTimeout(purgeTimer);
      const timeout = config.http.drainTimeoutMs;
      // The cache connection is closed once the last in-flight request is done with it.
      server.close(() => {
        registry.close().then(done, (e: unknown) => {
          log.warn({ err: e }, 'closing the blob descriptor cache failed');
          done();
        });
      });
      server.closeIdleConnections();
      const idle = setInterval(() => server.closeIdleConnections(), 100);
      idle.unref();
      server.once('close', () => clearInterval(idle));
      if (timeout > 0) {
        setTimeout(() => {
          server.closeAllConnections();
        }, timeout).unref();
      } else {
        server.closeAllConnections();
      }
    });
    return closing;
  };
  return { server, registry, url, port: a.port, close };
}
