/**
 * A TCP proxy for tests that breaks connections on purpose: after `cutAfter` bytes from client to server on
 * one connection it destroys both sides (once per `arm()`), like a network failure in the middle of an upload.
 */
import { createServer, connect, type Socket } from 'node:net';

export interface CutProxy {
  url: string;
  port: number;
  /** Connections cut so far. */
  cuts: number;
  /** Bytes the clients sent through the proxy, over all connections. */
  received: number;
  /** Cut the connection that carries the client's byte number `bytes + 1` counted from now (any connection). */
  arm(bytes: number): void;
  close(): Promise<void>;
}

export async function startCutProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<CutProxy> {
  let cutAfter: number | undefined;
  let sinceArm = 0;
  const sockets = new Set<Socket>();
  const state: CutProxy = {
    url: '',
    port: 0,
    cuts: 0,
    received: 0,
    arm: (b) => {
      cutAfter = b;
      sinceArm = 0;
    },
    close: () =>
      new Promise((ok) => {
        for (const s of sockets) s.destroy();
        server.close(() => ok());
      }),
  };
  const server = createServer((client) => {
    const upstream = connect(targetPort, targetHost);
    sockets.add(client).add(upstream);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d: Buffer) => {
      state.received += d.length;
      const before = sinceArm;
      sinceArm += d.length;
      if (cutAfter !== undefined && sinceArm > cutAfter) {
        const allowed = Math.max(0, cutAfter - before);
        cutAfter = undefined;
        state.cuts++;
        // Forward up to the limit, then drop both sides as a broken network would.
        upstream.write(d.subarray(0, allowed), () => setTimeout(kill, 20));
        client.pause();
        return;
      }
      if (!upstream.write(d)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (d: Buffer) => {
      if (!client.write(d)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  state.port = (server.address() as { port: number }).port;
  state.url = `http://127.0.0.1:${state.port}`;
  return state;
}
