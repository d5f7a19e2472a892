// The store for fleets that run several control-plane replicas: Redis through the official
// client. A node's record is a hash with the heartbeat's TTL, so Redis itself forgets dead
// nodes; every read also checks liveness, so nothing stale is returned in between. Keys
// carry a prefix and hash tags ({nodes}, {<digest>}) so the keys one script touches share a
// Redis Cluster slot. Writes that must not interleave (heartbeat, lease, source, report)
// are one Lua script or one MULTI. Locate reads a bounded random sample of holders (all of
// them when there are few) and ranks it, so no request reads every holder of a blob.
import { createHash } from 'node:crypto';
import { createClient, type RedisClientType } from 'redis';
import { StoreUnavailableError } from '../core/errors.js';
import { rankCandidates } from './locate.js';
import {
  NEVER,
  type Candidate,
  type HeartbeatOutcome,
  type Lease,
  type LeaseGrant,
  type LocateQuery,
  type ManifestWrite,
  type NodeRecord,
  PIECES_TTL_MS,
  type PieceRecord,
  type PiecesWrite,
  type Quarantine,
  type RegistryStore,
  type Replica,
  type SourceWrite,
  type StoreCounts,
  type StoredManifest,
  type SweepPolicy,
} from './model.js';
import { sameManifest } from './sqlite-store.js';
import { DEFAULTS } from '../core/defaults.js';

export interface RedisStoreOptions {
  url: string;
  /** Prefix of every key. Default `loom`. */
  prefix?: string;
}

/** A store operation that takes longer is answered with 503 (a hung Redis is a down Redis). */
const OPERATION_TIMEOUT_MS = DEFAULTS.controlPlane.redisTimeoutMs;

/** Lapsed nodes cleaned up per sweep at most (the sweep runs every few seconds). */
const SWEEP_BATCH = 200;

/** Holders of each kind read per locate, at least: exact ranking up to this many holders. */
const MIN_SAMPLE = 64;

interface StoredReplica {
  updatedAt: number;
  epoch?: string;
  pieces?: number[];
}

/**
 * Heartbeat. KEYS: node hash, node index. ARGV: url, expiresAt, px (0 = no expiry), id,
 * now, epoch ('' = keep), zone, free slots. Returns [resync (0 none, 1 all, 2 other epochs), epoch].
 */
const HEARTBEAT = `
local oldExpires = redis.call('HGET', KEYS[1], 'expiresAt')
local oldEpoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local epoch = ARGV[6]
local resync = 0
if not oldExpires or tonumber(oldExpires) <= tonumber(ARGV[5]) then
  resync = 1
elseif epoch ~= '' and epoch ~= oldEpoch then
  resync = 2
end
if epoch == '' then epoch = oldEpoch end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'url', ARGV[1], 'zone', ARGV[7], 'slots', ARGV[8], 'expiresAt', ARGV[2], 'epoch', epoch)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return {resync, epoch}
`;

/**
 * Drops one node's replica of one blob unless it was recorded under `epoch`. KEYS: complete
 * hash, partial hash. ARGV: node, epoch. Returns 1 when the node no longer holds the blob.
 */
const DROP_OTHER_EPOCH = `
local held = 0
for i = 1, 2 do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then
    if (cjson.decode(v).epoch or '') == ARGV[2] then held = 1 else redis.call('HDEL', KEYS[i], ARGV[1]) end
  end
end
return 1 - held
`;

/**
 * Lease grant. KEYS: leases hash (token -> "fencing:expiresAt:node"), fencing counter.
 * ARGV: node, slots, ttl, now, new token. Returns {'granted', token, value} or
 * {'held', token, value, ...}.
 */
const ACQUIRE_LEASE = `
local now = tonumber(ARGV[4])
local ttl = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
local own = nil
for i = 1, #all, 2 do
  local fencing, expires, node = string.match(all[i + 1], '^(%d+):(%d+):(.*)$')
  if tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(live, all[i])
    table.insert(live, all[i + 1])
    if node == ARGV[1] then own = {all[i], fencing} end
  end
end
local expires = string.format('%d', now + ttl)
if own then
  local value = own[2] .. ':' .. expires .. ':' .. ARGV[1]
  redis.call('HSET', KEYS[1], own[1], value)
  redis.call('PEXPIRE', KEYS[1], 2 * ttl + 1000)
  return {'granted', own[1], value}
end
if #live / 2 >= tonumber(ARGV[2]) then
  table.insert(live, 1, 'held')
  return live
end
local fencing = redis.call('INCR', KEYS[2])
local value = string.format('%d', fencing) .. ':' .. expires .. ':' .. ARGV[1]
redis.call('HSET', KEYS[1], ARGV[5], value)
redis.call('PEXPIRE', KEYS[1], 2 * ttl + 1000)
return {'granted', ARGV[5], value}
`;

/** Lease renewal. KEYS: leases hash. ARGV: token, ttl, now. Returns the new value or false. */
const RENEW_LEASE = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local fencing, expires, node = string.match(v, '^(%d+):(%d+):(.*)$')
local now = tonumber(ARGV[3])
if tonumber(expires) <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return false
end
local value = fencing .. ':' .. string.format('%d', now + tonumber(ARGV[2])) .. ':' .. node
redis.call('HSET', KEYS[1], ARGV[1], value)
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]) + 1000)
return value
`;

/**
 * Drops a partial replica not updated since the cutoff. KEYS: partial hash. ARGV: node,
 * cutoff. Returns 1 when it was dropped, 2 when there was none, 0 when it was updated since.
 */
const DROP_STALE_PARTIAL = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 2 end
if cjson.decode(v).updatedAt <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
`;

/** Source mapping. KEYS: source key. ARGV: digest, replace ('1'/'0'). */
const PUT_SOURCE = `
local old = redis.call('GET', KEYS[1])
if old == ARGV[1] then return 'unchanged' end
if old and ARGV[2] ~= '1' then return 'conflict' end
redis.call('SET', KEYS[1], ARGV[1])
if old then return 'replaced' end
return 'created'
`;

/**
 * Piece digests under a lease. KEYS: the record's hash. ARGV: fencing token, record JSON,
 * TTL ms. Returns 'stale' when the stored record has a newer fencing token.
 */
const PUT_PIECES = `
local fencing = redis.call('HGET', KEYS[1], 'fencing')
if fencing and tonumber(fencing) > tonumber(ARGV[1]) then return 'stale' end
redis.call('HSET', KEYS[1], 'fencing', ARGV[1], 'record', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 'written'
`;

export class RedisStore implements RegistryStore {
  readonly kind = 'redis' as const;
  private readonly client: RedisClientType;
  private readonly prefix: string;
  private lastError: string | undefined;

  constructor(private readonly options: RedisStoreOptions) {
    this.prefix = options.prefix ?? DEFAULTS.controlPlane.redisPrefix;
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
  /** The digests a node holds a replica of, so its replicas go with it. */
  private holdsKey(id: string): string {
    return this.key('{nodes}', 'holds', id);
  }
  private blobKey(
    digest: string,
    what: 'manifest' | 'complete' | 'partial' | 'reports' | 'leases' | 'fencing' | 'pieces',
  ): string {
    return this.key(`{${digest}}`, what);
  }
  private blobsKey(): string {
    return this.key('{blobs}', 'all');
  }
  /** Partial replicas by last update ("digest\nnode"), so the sweep finds the stale ones. */
  private partialsKey(): string {
    return this.key('{blobs}', 'partials');
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

  private eval(script: string, keys: string[], args: Array<string | number>): Promise<unknown> {
    return this.client.eval(script, { keys, arguments: args.map(String) });
  }

  heartbeat(node: NodeRecord, now: number): Promise<HeartbeatOutcome> {
    return this.run(async () => {
      const px = node.expiresAt >= NEVER ? 0 : Math.max(1, node.expiresAt - now);
      const [resync, epoch] = (await this.eval(
        HEARTBEAT,
        [this.nodeKey(node.id), this.nodeIndexKey()],
        [node.url, node.expiresAt, px, node.id, now, node.epoch ?? '', node.zone ?? '', node.freeUploadSlots],
      )) as [number, string];
      if (resync === 1) await this.dropAllReplicas(node.id);
      if (resync === 2) await this.dropOtherEpochs(node.id, epoch);
      return { resync: resync !== 0 };
    });
  }

  private async dropAllReplicas(id: string): Promise<void> {
    const digests = await this.client.sMembers(this.holdsKey(id));
    const multi = this.client.multi();
    for (const digest of digests) {
      multi.hDel(this.blobKey(digest, 'complete'), id);
      multi.hDel(this.blobKey(digest, 'partial'), id);
      multi.zRem(this.partialsKey(), `${digest}\n${id}`);
    }
    multi.del(this.holdsKey(id));
    await multi.exec();
  }

  private async dropOtherEpochs(id: string, epoch: string): Promise<void> {
    const digests = await this.client.sMembers(this.holdsKey(id));
    const gone = await Promise.all(
      digests.map((digest) =>
        this.eval(DROP_OTHER_EPOCH, [this.blobKey(digest, 'complete'), this.blobKey(digest, 'partial')], [id, epoch]),
      ),
    );
    const dropped = digests.filter((_, i) => Number(gone[i]) === 1);
    if (dropped.length) {
      await this.client
        .multi()
        .sRem(this.holdsKey(id), dropped)
        .zRem(
          this.partialsKey(),
          dropped.map((digest) => `${digest}\n${id}`),
        )
        .exec();
    }
  }

  removeNode(id: string): Promise<boolean> {
    return this.run(async () => {
      await this.dropAllReplicas(id);
      const [deleted] = await this.client.multi().del(this.nodeKey(id)).zRem(this.nodeIndexKey(), id).exec();
      return Number(deleted) > 0;
    });
  }

  /** Node records for `ids` that are still live (their hash exists and has not lapsed). */
  private async liveRecords(ids: string[], now: number): Promise<Map<string, NodeRecord>> {
    const live = new Map<string, NodeRecord>();
    if (ids.length === 0) return live;
    const multi = this.client.multi();
    for (const id of ids) multi.hmGet(this.nodeKey(id), ['url', 'zone', 'slots', 'expiresAt', 'epoch']);
    const rows = (await multi.execAsPipeline()) as unknown as Array<Array<string | null>>;
    rows.forEach((row, i) => {
      const [url, zone, slots, expiresAt, epoch] = row;
      if (!url || !expiresAt || Number(expiresAt) <= now) return;
      const id = ids[i]!;
      live.set(id, {
        id,
        url,
        zone: zone || undefined,
        freeUploadSlots: Number(slots),
        expiresAt: Number(expiresAt),
        epoch: epoch || undefined,
      });
    });
    return live;
  }

  liveNodes(now: number): Promise<NodeRecord[]> {
    return this.run(async () => {
      const ids = (await this.client.zRangeByScore(this.nodeIndexKey(), `(${now}`, '+inf')).sort();
      const live = await this.liveRecords(ids, now);
      return ids.flatMap((id) => live.get(id) ?? []);
    });
  }

  putManifest(manifest: StoredManifest): Promise<ManifestWrite> {
    return this.run(async () => {
      const set = await this.client.set(this.blobKey(manifest.digest, 'manifest'), JSON.stringify(manifest), {
        condition: 'NX',
      });
      if (set === 'OK') {
        await this.client.sAdd(this.blobsKey(), manifest.digest);
        return 'created';
      }
      const existing = await this.manifestOf(manifest.digest);
      return existing && sameManifest(existing, manifest) ? 'unchanged' : 'conflict';
    });
  }

  private async manifestOf(digest: string): Promise<StoredManifest | undefined> {
    const value = await this.client.get(this.blobKey(digest, 'manifest'));
    return typeof value === 'string' ? (JSON.parse(value) as StoredManifest) : undefined;
  }

  getManifest(digest: string): Promise<StoredManifest | undefined> {
    return this.run(() => this.manifestOf(digest));
  }

  deleteManifest(digest: string): Promise<boolean> {
    return this.run(async () => {
      const [deleted] = await this.client
        .multi()
        .del(this.blobKey(digest, 'manifest'))
        .sRem(this.blobsKey(), digest)
        .exec();
      return Number(deleted) > 0;
    });
  }

  putReplica(replica: Replica, now: number): Promise<boolean> {
    return this.run(async () => {
      const [expiresAt, epoch] = await this.client.hmGet(this.nodeKey(replica.nodeId), ['expiresAt', 'epoch']);
      if (!expiresAt || Number(expiresAt) <= now) return false;
      const stored: StoredReplica = {
        updatedAt: replica.updatedAt,
        ...(epoch && { epoch }),
        ...(!replica.complete && { pieces: replica.pieces ?? [] }),
      };
      const [into, from] = replica.complete ? (['complete', 'partial'] as const) : (['partial', 'complete'] as const);
      const member = `${replica.digest}\n${replica.nodeId}`;
      const multi = this.client
        .multi()
        .hSet(this.blobKey(replica.digest, into), replica.nodeId, JSON.stringify(stored))
        .hDel(this.blobKey(replica.digest, from), replica.nodeId)
        .sAdd(this.holdsKey(replica.nodeId), replica.digest);
      if (replica.complete) multi.zRem(this.partialsKey(), member);
      else multi.zAdd(this.partialsKey(), { score: replica.updatedAt, value: member });
      await multi.exec();
      return true;
    });
  }

  removeReplica(digest: string, nodeId: string): Promise<boolean> {
    return this.run(async () => {
      const [complete, partial] = await this.client
        .multi()
        .hDel(this.blobKey(digest, 'complete'), nodeId)
        .hDel(this.blobKey(digest, 'partial'), nodeId)
        .sRem(this.holdsKey(nodeId), digest)
        .zRem(this.partialsKey(), `${digest}\n${nodeId}`)
        .exec();
      return Number(complete) + Number(partial) > 0;
    });
  }

  locate(digest: string, query: LocateQuery): Promise<Candidate[]> {
    return this.run(async () => {
      const sample = Math.max(MIN_SAMPLE, 4 * query.limit);
      const [complete, partial, excluded] = await Promise.all([
        this.client.hRandFieldCountWithValues(this.blobKey(digest, 'complete'), sample),
        this.client.hRandFieldCountWithValues(this.blobKey(digest, 'partial'), sample),
        query.quarantine ? this.quarantined(digest, query.now, query.quarantine) : Promise.resolve(new Set<string>()),
      ]);
      const replicas: Replica[] = [];
      for (const [entries, isComplete] of [
        [complete, true],
        [partial, false],
      ] as const) {
        for (const { field, value } of entries) {
          const nodeId = String(field);
          if (nodeId === query.asker || excluded.has(nodeId)) continue;
          const r = JSON.parse(String(value)) as StoredReplica;
          if (!isComplete && r.updatedAt <= query.now - query.partialTtlMs) continue;
          replicas.push({ digest, nodeId, complete: isComplete, pieces: r.pieces, updatedAt: r.updatedAt });
        }
      }
      const live = await this.liveRecords(
        replicas.map((r) => r.nodeId),
        query.now,
      );
      const candidates = replicas.flatMap((replica) => {
        const node = live.get(replica.nodeId);
        return node ? [{ node, replica }] : [];
      });
      return rankCandidates(candidates, query);
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

  putSource(key: string, digest: string, replace: boolean): Promise<SourceWrite> {
    return this.run(
      async () => (await this.eval(PUT_SOURCE, [this.sourceKey(key)], [digest, replace ? '1' : '0'])) as SourceWrite,
    );
  }

  getSource(key: string): Promise<string | undefined> {
    return this.run(async () => {
      const value = await this.client.get(this.sourceKey(key));
      return typeof value === 'string' ? value : undefined;
    });
  }

  putPieces(id: string, record: PieceRecord): Promise<PiecesWrite> {
    return this.run(
      async () =>
        (await this.eval(
          PUT_PIECES,
          [this.blobKey(id, 'pieces')],
          [record.fencingToken, JSON.stringify(record), PIECES_TTL_MS],
        )) as PiecesWrite,
    );
  }

  getPieces(id: string): Promise<PieceRecord | undefined> {
    return this.run(async () => {
      const value = await this.client.hGet(this.blobKey(id, 'pieces'), 'record');
      return typeof value === 'string' ? (JSON.parse(value) as PieceRecord) : undefined;
    });
  }

  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number> {
    return this.run(async () => {
      const key = this.blobKey(digest, 'reports');
      const replies = await this.client
        .multi()
        .zAdd(key, { score: now, value: `${nodeId}\n${reporter}` })
        .zRemRangeByScore(key, '-inf', now - windowMs)
        .pExpire(key, windowMs)
        .zRangeByScore(key, `(${now - windowMs}`, '+inf')
        .exec();
      const members = replies[3] as unknown as string[];
      return members.filter((m) => m.split('\n')[0] === nodeId).length;
    });
  }

  acquireLease(
    digest: string,
    node: string,
    slots: number,
    ttlMs: number,
    now: number,
    newToken: string,
  ): Promise<LeaseGrant> {
    return this.run(async () => {
      const reply = (await this.eval(
        ACQUIRE_LEASE,
        [this.blobKey(digest, 'leases'), this.blobKey(digest, 'fencing')],
        [node, slots, ttlMs, now, newToken],
      )) as string[];
      if (reply[0] === 'granted') return { granted: true, ...parseLease(reply[1]!, reply[2]!) };
      const holders = [];
      for (let i = 1; i < reply.length; i += 2) {
        const { node: holder, fencingToken, expiresAt } = parseLease(reply[i]!, reply[i + 1]!);
        holders.push({ node: holder, fencingToken, expiresAt });
      }
      holders.sort((a, b) => a.fencingToken - b.fencingToken);
      return { granted: false, holders };
    });
  }

  getLease(digest: string, token: string, now: number): Promise<Lease | undefined> {
    return this.run(async () => {
      const value = await this.client.hGet(this.blobKey(digest, 'leases'), token);
      if (typeof value !== 'string') return undefined;
      const lease = parseLease(token, value);
      return lease.expiresAt > now ? lease : undefined;
    });
  }

  renewLease(digest: string, token: string, ttlMs: number, now: number): Promise<Lease | undefined> {
    return this.run(async () => {
      const value = await this.eval(RENEW_LEASE, [this.blobKey(digest, 'leases')], [token, ttlMs, now]);
      return typeof value === 'string' ? parseLease(token, value) : undefined;
    });
  }

  releaseLease(digest: string, token: string): Promise<boolean> {
    return this.run(async () => Number(await this.client.hDel(this.blobKey(digest, 'leases'), token)) > 0);
  }

  /**
   * Drops the replicas of nodes whose registration lapsed (Redis already forgot the nodes
   * themselves) and partial replicas not updated within the partial TTL (locate leaves
   * them out before that); reports and leases expire with their keys.
   */
  sweep(now: number, policy: SweepPolicy): Promise<void> {
    return this.run(async () => {
      // A bounded batch per run, so one sweep stays within the operation timeout.
      const lapsed = await this.client.zRangeByScore(this.nodeIndexKey(), '-inf', now, {
        LIMIT: { offset: 0, count: SWEEP_BATCH },
      });
      for (const id of lapsed) {
        // A node that beat again since the range was read keeps its replicas.
        const expiresAt = await this.client.hGet(this.nodeKey(id), 'expiresAt');
        if (typeof expiresAt === 'string' && Number(expiresAt) > now) continue;
        await this.dropAllReplicas(id);
        await this.client.zRem(this.nodeIndexKey(), id);
      }
      const cutoff = now - policy.partialTtlMs;
      const stale = await this.client.zRangeByScore(this.partialsKey(), '-inf', cutoff, {
        LIMIT: { offset: 0, count: SWEEP_BATCH },
      });
      for (const member of stale) {
        const [digest, node] = member.split('\n') as [string, string];
        const dropped = await this.eval(DROP_STALE_PARTIAL, [this.blobKey(digest, 'partial')], [node, cutoff]);
        // An update since the range was read moved the member's score: only a stale one goes.
        if (Number(dropped) === 1) {
          await this.client.multi().sRem(this.holdsKey(node), digest).zRem(this.partialsKey(), member).exec();
        } else if (Number(dropped) === 2) {
          await this.client.zRem(this.partialsKey(), member);
        }
      }
    });
  }

  counts(now: number): Promise<StoreCounts> {
    return this.run(async () => {
      const [ids, blobs] = await Promise.all([
        this.client.zRangeByScore(this.nodeIndexKey(), `(${now}`, '+inf'),
        this.client.sCard(this.blobsKey()),
      ]);
      let replicas = 0;
      if (ids.length) {
        const multi = this.client.multi();
        for (const id of ids) multi.sCard(this.holdsKey(id));
        const sizes = (await multi.execAsPipeline()) as unknown as number[];
        replicas = sizes.reduce((a, b) => a + Number(b), 0);
      }
      return { liveNodes: ids.length, blobs: Number(blobs), replicas };
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

/** A lease stored as "fencing:expiresAt:node" (node ids may hold ':', so it comes last). */
function parseLease(token: string, value: string): Lease {
  const match = /^(\d+):(\d+):(.*)$/s.exec(value);
  if (!match) throw new Error(`malformed lease record ${JSON.stringify(value)}`);
  return { token, node: match[3]!, fencingToken: Number(match[1]), expiresAt: Number(match[2]) };
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
