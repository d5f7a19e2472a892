// The store for fleets that run several control-plane replicas: Redis through the official
// client. A node's record is a key with the heartbeat's TTL, so Redis itself forgets dead
// nodes; every read also checks liveness, so nothing stale is returned in between. Keys
// carry a prefix and hash tags ({nodes}, {<digest>}) so the keys one command touches share
// a Redis Cluster slot.
import { createHash } from 'node:crypto';
import { createClient, type RedisClientType } from 'redis';
import { StoreUnavailableError } from '../core/errors.js';
import type {
  Candidate,
  Manifest,
  ManifestWrite,
  NodeRecord,
  Quarantine,
  RegistryStore,
  Replica,
  StoreCounts,
} from './model.js';
import { sameManifest } from './sqlite-store.js';

export interface RedisStoreOptions {
  url: string;
  /** Prefix of every key. Default `loom`. */
  prefix?: string;
}

/** A store operation that takes longer is answered with 503 (a hung Redis is a down Redis). */
const OPERATION_TIMEOUT_MS = 2_000;

interface StoredNode {
  url: string;
  zone?: string;
  freeUploadSlots: number;
  expiresAt: number;
}

interface StoredReplica {
  complete: boolean;
  pieces?: number[];
  updatedAt: number;
}

export class RedisStore implements RegistryStore {
  readonly kind = 'redis' as const;
  private readonly client: RedisClientType;
  private readonly prefix: string;
  private lastError: string | undefined;

  constructor(private readonly options: RedisStoreOptions) {
    this.prefix = options.prefix ?? 'loom';
    this.client = createClient({
      url: options.url,
      // Fail fast while Redis is away (503 to the caller) instead of queueing requests.
      disableOfflineQueue: true,
      // No per-command timer (the client's default makes an AbortSignal per command, which
      // measured ~15% of the CPU of a locate); run() bounds each store operation instead.
      commandOptions: { timeout: 0 },
      socket: { connectTimeout: 2_000, reconnectStrategy: (retries) => Math.min(100 * (retries + 1), 2_000) },
    });
    this.client.on('error', (err: Error) => {
      this.lastError = err.message;
    });
    this.client.connect().catch((err: Error) => {
      this.lastError = err.message;
    });
  }

  private key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }
  private nodeKey(id: string): string {
    return this.key('{nodes}', 'node', id);
  }
  private nodeIndexKey(): string {
    return this.key('{nodes}', 'index');
  }
  private blobKey(digest: string, what: 'manifest' | 'replicas' | 'reports'): string {
    return this.key(`{${digest}}`, what);
  }
  private blobsKey(): string {
    return this.key('{blobs}', 'all');
  }
  private sourceKey(key: string): string {
    const hash = createHash('sha256').update(key).digest('hex').slice(0, 40);
    return this.key('source', `{${hash}}`);
  }

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.client.isReady) {
      throw new StoreUnavailableError(
        `Redis at ${redact(this.options.url)} is unavailable${this.lastError ? ` (${this.lastError})` : ''}`,
        {
          hint: 'the control plane reconnects by itself when Redis is back',
        },
      );
    }
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${OPERATION_TIMEOUT_MS} ms`)), OPERATION_TIMEOUT_MS);
    });
    try {
      return await Promise.race([fn(), deadline]);
    } catch (err) {
      throw new StoreUnavailableError(`Redis at ${redact(this.options.url)} failed: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  heartbeat(node: NodeRecord): Promise<void> {
    return this.run(async () => {
      const stored: StoredNode = {
        url: node.url,
        freeUploadSlots: node.freeUploadSlots,
        expiresAt: node.expiresAt,
        ...(node.zone && { zone: node.zone }),
      };
      const ttl = Math.max(1, node.expiresAt - Date.now());
      await Promise.all([
        this.client.set(this.nodeKey(node.id), JSON.stringify(stored), { expiration: { type: 'PX', value: ttl } }),
        this.client.zAdd(this.nodeIndexKey(), { score: node.expiresAt, value: node.id }),
      ]);
    });
  }

  removeNode(id: string): Promise<boolean> {
    return this.run(async () => {
      const [deleted] = await Promise.all([
        this.client.del(this.nodeKey(id)),
        this.client.zRem(this.nodeIndexKey(), id),
      ]);
      return Number(deleted) > 0;
    });
  }

  /** Node records for `ids` that are still live (their key exists and has not lapsed). */
  private async liveRecords(ids: string[], now: number): Promise<Map<string, StoredNode>> {
    const live = new Map<string, StoredNode>();
    if (ids.length === 0) return live;
    const values = await this.client.mGet(ids.map((id) => this.nodeKey(id)));
    values.forEach((value, i) => {
      if (typeof value !== 'string') return;
      const node = JSON.parse(value) as StoredNode;
      if (node.expiresAt > now) live.set(ids[i]!, node);
    });
    return live;
  }

  liveNodes(now: number): Promise<NodeRecord[]> {
    return this.run(async () => {
      await this.client.zRemRangeByScore(this.nodeIndexKey(), '-inf', now);
      const ids = (await this.client.zRange(this.nodeIndexKey(), 0, -1)).sort();
      const live = await this.liveRecords(ids, now);
      return [...live].map(([id, n]) => toNode(id, n));
    });
  }

  isLive(id: string, now: number): Promise<boolean> {
    return this.run(async () => (await this.liveRecords([id], now)).has(id));
  }

  putManifest(manifest: Manifest): Promise<ManifestWrite> {
    return this.run(async () => {
      const set = await this.client.set(this.blobKey(manifest.digest, 'manifest'), JSON.stringify(manifest), {
        condition: 'NX',
      });
      if (set === 'OK') {
        await this.client.sAdd(this.blobsKey(), manifest.digest);
        return 'created';
      }
      const existing = await this.getManifestRaw(manifest.digest);
      return existing && sameManifest(existing, manifest) ? 'unchanged' : 'conflict';
    });
  }

  private async getManifestRaw(digest: string): Promise<Manifest | undefined> {
    const value = await this.client.get(this.blobKey(digest, 'manifest'));
    return typeof value === 'string' ? (JSON.parse(value) as Manifest) : undefined;
  }

  getManifest(digest: string): Promise<Manifest | undefined> {
    return this.run(() => this.getManifestRaw(digest));
  }

  putReplica(replica: Replica): Promise<void> {
    return this.run(async () => {
      const stored: StoredReplica = {
        complete: replica.complete,
        updatedAt: replica.updatedAt,
        ...(replica.pieces && { pieces: replica.pieces }),
      };
      await this.client.hSet(this.blobKey(replica.digest, 'replicas'), replica.nodeId, JSON.stringify(stored));
    });
  }

  removeReplica(digest: string, nodeId: string): Promise<boolean> {
    return this.run(async () => Number(await this.client.hDel(this.blobKey(digest, 'replicas'), nodeId)) > 0);
  }

  candidates(digest: string, now: number, quarantine?: Quarantine): Promise<Candidate[]> {
    return this.run(async () => {
      const [replicas, excluded] = await Promise.all([
        this.client.hGetAll(this.blobKey(digest, 'replicas')) as Promise<Record<string, string>>,
        quarantine ? this.quarantined(digest, now, quarantine) : Promise.resolve(new Set<string>()),
      ]);
      const ids = Object.keys(replicas).filter((id) => !excluded.has(id));
      const live = await this.liveRecords(ids, now);
      const out: Candidate[] = [];
      for (const id of ids) {
        const node = live.get(id);
        if (!node) continue;
        const r = JSON.parse(replicas[id]!) as StoredReplica;
        out.push({
          node: toNode(id, node),
          replica: { digest, nodeId: id, complete: r.complete, pieces: r.pieces, updatedAt: r.updatedAt },
        });
      }
      return out;
    });
  }

  /** Nodes reported at least `threshold` times for `digest` within the window. */
  private async quarantined(digest: string, now: number, { windowMs, threshold }: Quarantine): Promise<Set<string>> {
    const members = await this.client.zRangeByScore(this.blobKey(digest, 'reports'), `(${now - windowMs}`, '+inf');
    const counts = new Map<string, number>();
    for (const member of members) {
      const node = member.split('\n')[0]!;
      counts.set(node, (counts.get(node) ?? 0) + 1);
    }
    return new Set([...counts].filter(([, n]) => n >= threshold).map(([node]) => node));
  }

  putSource(key: string, digest: string): Promise<void> {
    return this.run(async () => {
      await this.client.set(this.sourceKey(key), digest);
    });
  }

  getSource(key: string): Promise<string | undefined> {
    return this.run(async () => {
      const value = await this.client.get(this.sourceKey(key));
      return typeof value === 'string' ? value : undefined;
    });
  }

  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number> {
    return this.run(async () => {
      const key = this.blobKey(digest, 'reports');
      await this.client.zAdd(key, { score: now, value: `${nodeId}\n${reporter}` });
      await this.client.zRemRangeByScore(key, '-inf', now - windowMs);
      await this.client.pExpire(key, windowMs);
      const members = await this.client.zRangeByScore(key, now - windowMs, '+inf');
      return members.filter((m) => m.split('\n')[0] === nodeId).length;
    });
  }

  counts(now: number): Promise<StoreCounts> {
    return this.run(async () => {
      const [liveNodes, digests] = await Promise.all([
        this.client.zCount(this.nodeIndexKey(), `(${now}`, '+inf'),
        this.client.sMembers(this.blobsKey()),
      ]);
      const lengths = await Promise.all(digests.map((d) => this.client.hLen(this.blobKey(d, 'replicas'))));
      return {
        liveNodes: Number(liveNodes),
        blobs: digests.length,
        replicas: lengths.reduce((a, b) => a + Number(b), 0),
      };
    });
  }

  ping(): Promise<void> {
    return this.run(async () => {
      await this.client.ping();
    });
  }

  /** Deletes every key under the prefix (tests and benchmarks clean up with it). */
  async dropAll(): Promise<void> {
    await this.run(async () => {
      for await (const keys of this.client.scanIterator({ MATCH: `${this.prefix}:*`, COUNT: 500 })) {
        const batch = (Array.isArray(keys) ? keys : [keys]) as string[];
        if (batch.length) await this.client.del(batch);
      }
    });
  }

  async close(): Promise<void> {
    if (this.client.isOpen) await this.client.close().catch(() => undefined);
    else this.client.destroy();
  }
}

function toNode(id: string, n: StoredNode): NodeRecord {
  return { id, url: n.url, zone: n.zone, freeUploadSlots: n.freeUploadSlots, expiresAt: n.expiresAt };
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
