/**
 * A round-robin TCP load balancer for scale-out tests: each new connection goes to the next backend; a
 * backend that refuses the connection (a killed instance) is skipped, as nginx or haproxy would do.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface Balancer {
  url: string;
  host: string;
  port: number;
  /** Connections handed to each backend so far (by index). */
  connections: number[];
  stop(): Promise<void>;
}

export async function startBalancer(backendPorts: number[]): Promise<Balancer> {
  let next = 0;
  const connections = backendPorts.map(() => 0);
  const open = new Set<Socket>();
  const server = createServer((client) => {
    open.add(client);
    client.on('close', () => open.delete(client));
    client.pause();
    const attempt = (tries: number): void => {
      const i = next++ % backendPorts.length;
      const upstream = connect(backendPorts[i]!, '127.0.0.1');
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        connections[i]!++;
        open.add(upstream);
        upstream.on('close', () => open.delete(upstream));
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
      });
      upstream.once('error', () => {
        if (connected) return;
        if (tries + 1 < backendPorts.length) attempt(tries + 1);
        else client.destroy();
      });
    };
    attempt(0);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    connections,
    stop: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((ok) => server.close(() => ok()));
    },
  };
}
