// What the control-plane tests share: a real service on a loopback port over each store
// (SQLite in a temp dir, the machine's Redis under a key prefix of this run), a JSON caller,
// and clean-up of every service and Redis key when the test file ends.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { RedisStore } from '../../src/control-plane/redis-store.js';
import { SqliteStore } from '../../src/control-plane/sqlite-store.js';
import { buildControlPlane, type ControlPlaneOptions, type RegistryStore } from '../../src/index.js';
import { tempDir } from '../helpers/fixtures.js';
import { REDIS_URL } from '../helpers/redis.js';

export const dir = tempDir();
export const D1 = 'a'.repeat(64);
export const D2 = 'b'.repeat(64);
export const PIECE = 'c'.repeat(64);
/** Unique per run, so parallel runs on the shared Redis never meet. */
export const prefix = `loomtest-${randomBytes(4).toString('hex')}`;

export interface Reply {
  status: number;
  body: unknown;
}

export interface Service {
  url: string;
  app: FastifyInstance;
  store: RegistryStore;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
}

const services: Service[] = [];
after(async () => {
  for (const s of services) {
    await s.app.close();
    if (s.store instanceof RedisStore) await s.store.dropAll().catch(() => undefined);
    await s.store.close();
  }
});

export async function startService(store: RegistryStore, options: Partial<ControlPlaneOptions> = {}): Promise<Service> {
  const app = await buildControlPlane({ store, ...options });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const service: Service = {
    url,
    app,
    store,
    async call(method, path, body, headers = {}) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
    },
  };
  services.push(service);
  return service;
}

/** Closes a service started by startService now (a restart test), leaving its data. */
export async function stopService(service: Service): Promise<void> {
  await service.app.close();
  await service.store.close();
  services.splice(services.indexOf(service), 1);
}

export type StoreFactory = {
  name: 'sqlite' | 'redis';
  /** How the suite is titled, when not by name. */
  label?: string;
  make: (tag: string) => RegistryStore;
};
export const factories: StoreFactory[] = [
  { name: 'sqlite', make: (tag) => new SqliteStore(join(dir, `${tag}.db`)) },
  { name: 'redis', make: (tag) => new RedisStore({ url: REDIS_URL, prefix: `${prefix}-${tag}` }) },
];

export async function ready(store: RegistryStore): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      await store.ping();
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`${store.kind} store never became ready`);
}

let counter = 0;
export async function service(factory: StoreFactory, options: Partial<ControlPlaneOptions> = {}): Promise<Service> {
  const store = factory.make(`t${++counter}-${randomBytes(2).toString('hex')}`);
  await ready(store);
  return startService(store, options);
}

export const beat = (s: Service, id: string, body: Record<string, unknown> = {}, headers?: Record<string, string>) =>
  s.call('PUT', `/v1/nodes/${id}`, { url: `http://${id}.test:7071`, ...body }, headers);

export async function peerIds(s: Service, digest: string, query = '', headers?: Record<string, string>) {
  const res = await s.call('GET', `/v1/blobs/${digest}/peers${query}`, undefined, headers);
  return (res.body as { peers: Array<{ id: string }> }).peers.map((p) => p.id);
}

export const errorOf = (reply: Reply) => (reply.body as { error: { code: string; message: string } }).error;
