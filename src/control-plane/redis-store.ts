// The store for fleets that run several control-plane replicas: Redis through the official
// client, one server (`redis://`) or a Redis Cluster (`redis+cluster://`). A node's record
// is a hash with the heartbeat's TTL, so Redis itself forgets dead nodes; every read also
// checks liveness, so nothing stale is returned in between.
//
// Keys carry a prefix and a hash tag: a node's keys share the slot of `{node:<id>}`, a
// blob's the slot of `{<digest>}`, so nodes and blobs spread over a cluster's slots and
// every script touches one slot. What must not interleave is one script: a heartbeat (its
// resync decision and the record), a replica's write, a report, a lease, a source mapping.
// A write that spans a node and a blob (a replica) cannot be one script in a cluster; it
// is made safe by the registration id instead: each heartbeat that starts a registration
// (new node, lapsed, new epoch) draws a new `reg`, every replica carries the `reg` it was
// recorded under, and locate answers only with replicas whose `reg` is their node's
// current one. Replicas of an older registration are invisible at once and deleted after.
//
// Locate is one pipelined read on the blob's slot (a random sample of holders and the
// blob's reports, picked and filtered here), the sampled nodes' records from this process's
// copy (read and kept on a miss; kept right by pub/sub, see nodeCache), a ranking of that
// bounded sample, and a read of piece lists for the partial holders returned only.
import { createHash, randomBytes } from 'node:crypto';
import { createClient, createCluster, type RedisClientType, type RedisClusterType } from 'redis';
import { StoreUnavailableError, UsageError } from '../core/errors.js';
import { rankCandidates } from './locate.js';
import {
  NEVER,
  type Candidate,
  type HeartbeatOutcome,
  type Lease,
  type LeaseGrant,
  type LocateQuery,
  type Manifest,
  type ManifestWrite,
  type NodeRecord,
  PIECES_TTL_MS,
  type PieceRecord,
  type PiecesWrite,
  type RegistryStore,
  type Replica,
  type SourceWrite,
  type StoreCounts,
  type StoredManifest,
  type SweepPolicy,
} from './model.js';
import { sameManifest } from '../core/manifest.js';
import { DEFAULTS } from '../core/defaults.js';

export interface RedisStoreOptions {
  /**
   * `redis://[user:pass@]host:port[/db]` (or `rediss://`) for one server;
   * `redis+cluster://[user:pass@]host:port[,host:port…]` (or `rediss+cluster://`) for a
   * Redis Cluster, given one or more of its nodes.
   */
  url: string;
  /** Prefix of every key. Default `loom`. */
  prefix?: string;
  /**
   * How long this process reuses a node record it read for locate (0 = never). Removals,
   * new registrations and a new URL or zone reach every replica's copy through pub/sub
   * at once; only a node's load (free upload slots) may be this old. Default 2 s.
   */
  nodeCacheMs?: number;
}

/** A store operation that takes longer is answered with 503 (a hung Redis is a down Redis). */
const OPERATION_TIMEOUT_MS = DEFAULTS.controlPlane.redisTimeoutMs;

/** Lapsed nodes and stale partials cleaned up per sweep at most (the sweep runs every few seconds). */
const SWEEP_BATCH = 200;

/** Holders of each kind sampled per locate, at least: exact ranking up to this many holders. */
const MIN_SAMPLE = 64;

/**
 * Holders of a sample whose node records locate reads: this many times the limit, same zone
 * first. Reading all 64 records cost twice the CPU of a locate of a 10,000-holder blob.
 */
const PICK_FACTOR = 2;

/** The node index is split in this many keys (slots), so heartbeats spread over a cluster. */
const INDEX_SHARDS = 16;

const NODE_FIELDS = ['url', 'zone', 'slots', 'expiresAt', 'epoch', 'reg'];

/** Node records kept for locate at most; past it the copy starts again (a fleet is ~10,000). */
const NODE_CACHE_MAX = 100_000;

/** Each script's SHA1, computed once. */
const SCRIPT_SHAS = new Map<string, string>();

/**
 * Heartbeat. KEYS: node record, node holdings. ARGV: url, expiresAt, px (0 = no expiry),
 * now, epoch ('' = keep), zone, free slots, a new registration id. A node that is new,
 * lapsed or comes with a new epoch starts a registration: a new `reg`, its holdings handed
 * back for deletion. Returns {resync (0/1), reg, moved (0/1: a new URL or zone), epoch,
 * digest, old reg, digest, old reg, …}.
 */
const HEARTBEAT = `
local old = redis.call('HMGET', KEYS[1], 'expiresAt', 'epoch', 'reg', 'url', 'zone')
local moved = 0
if old[4] ~= ARGV[1] or (old[5] or '') ~= ARGV[6] then moved = 1 end
local epoch = ARGV[5]
local resync = 0
if not old[1] or not old[3] or tonumber(old[1]) <= tonumber(ARGV[4]) then
  resync = 1
elseif epoch ~= '' and epoch ~= (old[2] or '') then
  resync = 1
end
if epoch == '' then epoch = old[2] or '' end
local reply = {resync}
local reg = old[3]
if resync == 1 then
  reg = ARGV[8]
  local held = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[2])
  table.insert(reply, reg)
  table.insert(reply, moved)
  table.insert(reply, epoch)
  for i = 1, #held do table.insert(reply, held[i]) end
else
  table.insert(reply, reg)
  table.insert(reply, moved)
  table.insert(reply, epoch)
end
redis.call('HSET', KEYS[1], 'url', ARGV[1], 'zone', ARGV[6], 'slots', ARGV[7], 'expiresAt', ARGV[2], 'epoch', epoch, 'reg', reg)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return reply
`;

/**
 * Records that a live node holds a blob. KEYS: node record, node holdings. ARGV: digest,
 * now. Returns {registration id, zone}, or false when the node is not live.
 */
const HOLD = `
local rec = redis.call('HMGET', KEYS[1], 'expiresAt', 'reg', 'zone')
if not rec[1] or not rec[2] or tonumber(rec[1]) <= tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[2], ARGV[1], rec[2])
return {rec[2], rec[3] or ''}
`;

/**
 * Writes a replica. KEYS: complete hash, partial hash, pieces hash (each node -> value).
 * ARGV: node, "updatedAt:reg:zone" (the zone the node had, for locate's pick), complete
 * ('1'/'0'), piece list (JSON).
 */
const PUT_REPLICA = `
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
`;

/**
 * Deletes a node's replica of a blob if it was recorded under registration `reg` (''
 * = any). KEYS: complete, partial, pieces. ARGV: node, reg. Returns how many it deleted.
 */
const DROP_REPLICA = `
local dropped = 0
for i = 1, 2 do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v and (ARGV[2] == '' or string.match(v, '^%d+:(%x+):') == ARGV[2]) then
    redis.call('HDEL', KEYS[i], ARGV[1])
    if i == 2 then redis.call('HDEL', KEYS[3], ARGV[1]) end
    dropped = dropped + 1
  end
end
return dropped
`;

/**
 * Ends a node's registration: deregistration (ARGV[1] = '') or the sweep of a lapsed node
 * (ARGV[1] = now: a node that beat again since is left alone). KEYS: record, holdings.
 * Returns {1 if a record was deleted, digest, reg, …} or {-1} for a live node.
 */
const END_NODE = `
if ARGV[1] ~= '' then
  local expires = redis.call('HGET', KEYS[1], 'expiresAt')
  if expires and tonumber(expires) > tonumber(ARGV[1]) then return {-1} end
end
local reply = {redis.call('DEL', KEYS[1])}
local held = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
for i = 1, #held do table.insert(reply, held[i]) end
return reply
`;

/** Removes a node from its index shard unless it beat since. KEYS: index. ARGV: id, now. */
const UNINDEX_LAPSED = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
`;

/**
 * Drops a partial replica not updated since the cutoff. KEYS: partial, pieces. ARGV: node,
 * cutoff. Returns 1 when it was dropped, 2 when there was none, 0 when it was updated since.
 */
const DROP_STALE_PARTIAL = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 2 end
if tonumber(string.match(v, '^(%d+):')) <= tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
`;

/** Compare and delete. KEYS: a key. ARGV: the value it must hold. Returns 1 when deleted. */
const DELETE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

/**
 * A report. KEYS: the blob's reports, and for a replica report its complete and partial
 * hashes. ARGV: "node\nreporter", now, window, node. With the hashes, recorded only if the
 * node holds a replica (is a field of either) or was reported within the window; otherwise
 * -1 and nothing written. Returns how many distinct reporters the node has within the window.
 */
const REPORT = `
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local prefix = ARGV[4] .. '\\n'
local function reported()
  local n = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf')) do
    if string.sub(m, 1, #prefix) == prefix then n = n + 1 end
  end
  return n
end
if #KEYS == 3 and redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 and redis.call('HEXISTS', KEYS[3], ARGV[4]) == 0
    and reported() == 0 then
  return -1
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
return reported()
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

/** Source mapping. KEYS: source key. ARGV: digest, replace ('1'/'0'). */
const PUT_SOURCE = `
local old = redis.call('GET', KEYS[1])
if old == ARGV[1] then return 'unchanged' end
if old and ARGV[2] ~= '1' then return 'conflict' end
redis.call('SET', KEYS[1], ARGV[1])
if old then return 'replaced' end
return 'created'
`;

type Redis = RedisClientType | RedisClusterType;

/** A live node as locate needs it: its record and the registration its replicas must carry. */
interface LiveNode {
  node: NodeRecord;
  reg: string;
}

/**
 * This process's copy of a node record: `live` undefined marks one dropped by an
 * invalidation (a read that started before it must not bring the old record back). `seq`
 * orders copies against invalidations; `until` is when the copy is read again.
 */
interface CachedNode {
  live: LiveNode | undefined;
  seq: number;
  until: number;
}

/** A holder locate's sample picked: its node, the registration its replica carries, updatedAt if partial. */
interface HolderPick {
  id: string;
  reg: string;
  updatedAt: number | undefined;
}

/** A node's replica as a heartbeat, deregistration or sweep hands it back: delete it where it is still that registration's. */
interface Holding {
  digest: string;
  reg: string;
}

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
  private readonly client: Redis;
  private readonly prefix: string;
  private lastError: string | undefined;
  /**
   * Node records locate read, so that a locate is one read of the blob's keys instead of
   * that and a read per picked holder (16 of its 17 commands, ~20 % of this process's CPU
   * per locate under fleet load). Trusted only while `subscriber` is connected: it hears
   * every replica's removals, re-registrations and moves (see publishNodeChange).
   */
  private readonly nodeCache = new Map<string, CachedNode>();
  private readonly nodeCacheMs: number;
  /** Counts invalidations: a copy is written only if none came since its read started. */
  private nodeSeq = 0;
  private readonly subscriber: Redis | undefined;
  private subscribed = false;
  /** Tells this process's own messages apart (it has applied them already). */
  private readonly instance = randomBytes(8).toString('hex');

  constructor(private readonly options: RedisStoreOptions) {
    this.prefix = options.prefix ?? DEFAULTS.controlPlane.redisPrefix;
    // A brace in the prefix would become the hash tag of every key, all in one slot.
    if (/[{}]/.test(this.prefix)) throw new UsageError(`the Redis key prefix "${this.prefix}" must not contain { or }`);
    const clientOptions = {
      // Fail fast while Redis is away (503 to the caller) instead of queueing requests.
      disableOfflineQueue: true,
      socket: {
        connectTimeout: 2_000,
        reconnectStrategy: (retries: number) => Math.min(100 * (retries + 1), 2_000),
      },
    };
    // No per-command timer (the client's default makes an AbortSignal per command, which
    // measured ~15% of the CPU of a locate); run() bounds each store operation instead.
    const commandOptions = { timeout: 0 };
    const cluster = clusterRootNodes(options.url);
    this.client = cluster
      ? (createCluster({
          rootNodes: cluster.map((url) => ({ url })),
          defaults: clientOptions,
          commandOptions,
        }) as unknown as RedisClusterType)
      : (createClient({ url: options.url, ...clientOptions, commandOptions }) as unknown as RedisClientType);
    this.client.on('error', (err: Error) => {
      this.lastError = err.message;
    });
    this.client.connect().catch((err: Error) => {
      this.lastError = err.message;
    });
    this.nodeCacheMs = options.nodeCacheMs ?? DEFAULTS.controlPlane.redisNodeCacheMs;
    if (this.nodeCacheMs > 0) {
      const subscriber = this.client.duplicate() as Redis;
      this.subscriber = subscriber;
      subscriber.on('error', (err: Error) => {
        this.lastError = err.message;
      });
      // Messages sent while it was away are lost: every copy is read again.
      subscriber.on('ready', () => this.nodeCache.clear());
      subscriber
        .connect()
        .then(() =>
          subscriber.subscribe(this.nodeChangesChannel(), (message: string) => {
            const space = message.indexOf(' ');
            if (message.slice(0, space) !== this.instance) this.forgetNode(message.slice(space + 1));
          }),
        )
        .then(() => {
          this.subscribed = true;
        })
        .catch((err: Error) => {
          this.lastError = err.message;
        });
    }
  }

  /** Whether this store talks to a Redis Cluster. */
  get clustered(): boolean {
    return clusterRootNodes(this.options.url) !== undefined;
  }

  private key(...parts: string[]): string {
    return [this.prefix, ...parts].join(':');
  }
  private recordKey(id: string): string {
    return this.key(`{node:${id}}`, 'rec');
  }
  /** The blobs a node holds, each with the registration it was recorded under, so its replicas go with it. */
  private holdsKey(id: string): string {
    return this.key(`{node:${id}}`, 'holds');
  }
  private indexKey(shard: number): string {
    return this.key(`{nodes:${shard}}`, 'index');
  }
  private indexKeyOf(id: string): string {
    return this.indexKey(shardOf(id));
  }
  private blobKey(
    digest: string,
    what: 'manifest' | 'complete' | 'partial' | 'pieces' | 'reports' | 'leases' | 'fencing' | 'source-pieces',
  ): string {
    return this.key(`{${digest}}`, what);
  }
  private replicaKeys(digest: string): string[] {
    return [this.blobKey(digest, 'complete'), this.blobKey(digest, 'partial'), this.blobKey(digest, 'pieces')];
  }
  private blobsKey(): string {
    return this.key('{blobs}', 'all');
  }
  /** Partial replicas by last update ("digest\nnode"), so the sweep finds the stale ones. */
  private partialsKey(): string {
    return this.key('{blobs}', 'partials');
  }
  private nodeChangesChannel(): string {
    return this.key('node-changes');
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

  /**
   * Runs a script on the slot of its keys (one slot: the callers' keys share a hash tag), by
   * its SHA1 so the text is not sent with every call; a server that lacks it (a restart, a
   * new cluster master) gets the text once.
   */
  private async eval(script: string, keys: string[], args: Array<string | number>): Promise<unknown> {
    let sha = SCRIPT_SHAS.get(script);
    if (sha === undefined) {
      sha = createHash('sha1').update(script).digest('hex');
      SCRIPT_SHAS.set(script, sha);
    }
    const options = { keys, arguments: args.map(String) };
    try {
      return await this.client.evalSha(sha, options);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.client.eval(script, options);
    }
  }

  heartbeat(node: NodeRecord, now: number): Promise<HeartbeatOutcome> {
    return this.run(async () => {
      const px = node.expiresAt >= NEVER ? 0 : Math.max(1, node.expiresAt - now);
      const [reply] = await Promise.all([
        this.eval(
          HEARTBEAT,
          [this.recordKey(node.id), this.holdsKey(node.id)],
          [
            node.url,
            node.expiresAt,
            px,
            now,
            node.epoch ?? '',
            node.zone ?? '',
            node.freeUploadSlots,
            randomBytes(8).toString('hex'),
          ],
        ) as Promise<Array<string | number>>,
        this.client.zAdd(this.indexKeyOf(node.id), { score: node.expiresAt, value: node.id }),
      ]);
      const resync = Number(reply[0]) === 1;
      const reg = String(reply[1]);
      // This replica's copy is the new record at once; the others drop theirs when the
      // registration or the address changed (their replicas' regs or URL are wrong now).
      this.keepNode({ node: { ...node, epoch: String(reply[3]) || undefined }, reg }, ++this.nodeSeq, now);
      if (resync || Number(reply[2]) === 1) await this.publishNodeChange(node.id);
      if (resync) await this.dropHoldings(node.id, pairs(reply.slice(4).map(String)));
      return { resync };
    });
  }

  /** Tells the other replicas to read a node's record again (their copies are dropped). */
  private async publishNodeChange(id: string): Promise<void> {
    if (this.nodeCacheMs > 0) await this.client.publish(this.nodeChangesChannel(), `${this.instance} ${id}`);
  }

  /** Drops this process's copy of a node's record, and any read of it under way. */
  private forgetNode(id: string): void {
    this.nodeCache.set(id, { live: undefined, seq: ++this.nodeSeq, until: 0 });
  }

  /** Keeps a copy of a node's record read (or written) at `seq`, unless an invalidation came since. */
  private keepNode(live: LiveNode, seq: number, now: number): void {
    if (this.nodeCacheMs <= 0) return;
    const current = this.nodeCache.get(live.node.id);
    if (current && current.seq > seq) return;
    if (!current && this.nodeCache.size >= NODE_CACHE_MAX) this.nodeCache.clear();
    this.nodeCache.set(live.node.id, { live, seq, until: now + this.nodeCacheMs });
  }

  /** Deletes replicas a node's ended registration left on its blobs (those it still holds under it). */
  private async dropHoldings(id: string, holdings: Holding[]): Promise<void> {
    await Promise.all(
      holdings.flatMap(({ digest, reg }) => [
        this.eval(DROP_REPLICA, this.replicaKeys(digest), [id, reg]),
        this.client.zRem(this.partialsKey(), `${digest}\n${id}`),
      ]),
    );
  }

  removeNode(id: string): Promise<boolean> {
    return this.run(async () => {
      this.forgetNode(id);
      const [reply] = await Promise.all([
        this.eval(END_NODE, [this.recordKey(id), this.holdsKey(id)], ['']) as Promise<Array<string | number>>,
        this.client.zRem(this.indexKeyOf(id), id),
      ]);
      // Again: a heartbeat answered while the record was deleted may have kept a copy.
      this.forgetNode(id);
      await Promise.all([this.publishNodeChange(id), this.dropHoldings(id, pairs(reply.slice(1).map(String)))]);
      return Number(reply[0]) > 0;
    });
  }

  /** Node records for `ids` that are still live, read in one pipeline (per cluster node). */
  private async liveRecords(ids: string[], now: number): Promise<Map<string, LiveNode>> {
    const rows = await Promise.all(ids.map((id) => this.client.hmGet(this.recordKey(id), NODE_FIELDS)));
    const live = new Map<string, LiveNode>();
    rows.forEach((row, i) => {
      const [url, zone, slots, expiresAt, epoch, reg] = row as Array<string | null>;
      if (!url || !expiresAt || !reg || Number(expiresAt) <= now) return;
      const id = ids[i]!;
      live.set(id, {
        node: {
          id,
          url,
          zone: zone || undefined,
          freeUploadSlots: Number(slots),
          expiresAt: Number(expiresAt),
          epoch: epoch || undefined,
        },
        reg,
      });
    });
    return live;
  }

  /**
   * liveRecords through this process's copies: those not yet due for a read and not past
   * their node's expiry (a lapse needs no message), while the subscriber that drops them
   * is connected; the rest read in one pipeline and kept.
   */
  private async cachedLiveRecords(ids: string[], now: number): Promise<Map<string, LiveNode>> {
    if (!this.subscribed || !this.subscriber?.isReady) return this.liveRecords(ids, now);
    const live = new Map<string, LiveNode>();
    const missing: string[] = [];
    for (const id of ids) {
      const cached = this.nodeCache.get(id);
      if (cached?.live && cached.until > now && cached.live.node.expiresAt > now) live.set(id, cached.live);
      else missing.push(id);
    }
    if (missing.length) {
      const seq = this.nodeSeq;
      for (const [id, record] of await this.liveRecords(missing, now)) {
        live.set(id, record);
        this.keepNode(record, seq, now);
      }
    }
    return live;
  }

  private async indexedIds(min: string, max: string): Promise<string[]> {
    const shards = await Promise.all(
      Array.from({ length: INDEX_SHARDS }, (_, shard) => this.client.zRangeByScore(this.indexKey(shard), min, max)),
    );
    return shards.flat();
  }

  liveNodes(now: number): Promise<NodeRecord[]> {
    return this.run(async () => {
      const ids = (await this.indexedIds(`(${now}`, '+inf')).sort();
      const live = await this.liveRecords(ids, now);
      return ids.flatMap((id) => live.get(id)?.node ?? []);
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
      const [deleted] = await Promise.all([
        this.client.del(this.blobKey(digest, 'manifest')),
        this.client.sRem(this.blobsKey(), digest),
      ]);
      return Number(deleted) > 0;
    });
  }

  deleteManifestIf(manifest: Manifest): Promise<boolean> {
    return this.run(async () => {
      const key = this.blobKey(manifest.digest, 'manifest');
      const value = await this.client.get(key);
      if (typeof value !== 'string' || !sameManifest(JSON.parse(value) as StoredManifest, manifest)) return false;
      // Deleted only if the record read is still there: a manifest published since stays.
      if (Number(await this.eval(DELETE_IF, [key], [value])) !== 1) return false;
      // The blobs set lives in a slot of its own (a cluster): removed after, as deleteManifest does.
      await this.client.sRem(this.blobsKey(), manifest.digest);
      return true;
    });
  }

  putReplica(replica: Replica, now: number): Promise<boolean> {
    return this.run(async () => {
      const { digest, nodeId } = replica;
      const held = await this.eval(HOLD, [this.recordKey(nodeId), this.holdsKey(nodeId)], [digest, now]);
      if (!Array.isArray(held)) return false;
      const [reg, zone] = held.map(String) as [string, string];
      const member = `${digest}\n${nodeId}`;
      await Promise.all([
        this.eval(PUT_REPLICA, this.replicaKeys(digest), [
          nodeId,
          `${Math.floor(replica.updatedAt)}:${reg}:${zone}`,
          replica.complete ? '1' : '0',
          JSON.stringify(replica.pieces ?? []),
        ]),
        replica.complete
          ? this.client.zRem(this.partialsKey(), member)
          : this.client.zAdd(this.partialsKey(), { score: replica.updatedAt, value: member }),
      ]);
      return true;
    });
  }

  removeReplica(digest: string, nodeId: string): Promise<boolean> {
    return this.run(async () => {
      const [dropped] = await Promise.all([
        this.eval(DROP_REPLICA, this.replicaKeys(digest), [nodeId, '']),
        this.client.hDel(this.holdsKey(nodeId), digest),
        this.client.zRem(this.partialsKey(), `${digest}\n${nodeId}`),
      ]);
      return Number(dropped) > 0;
    });
  }

  locate(digest: string, query: LocateQuery): Promise<Candidate[]> {
    return this.run(async () => {
      const sample = Math.max(MIN_SAMPLE, 4 * query.limit);
      const sampleOf = async (partialOnly: boolean): Promise<{ candidates: Candidate[]; withPartial: boolean }> => {
        const { picks, withPartial } = await this.sampleHolders(digest, query, sample, partialOnly);
        const live = await this.cachedLiveRecords(
          picks.map((pick) => pick.id),
          query.now,
        );
        const candidates: Candidate[] = [];
        for (const pick of picks) {
          const record = live.get(pick.id);
          // A replica of an ended registration is not the node's any more.
          if (!record || record.reg !== pick.reg) continue;
          const { node } = record;
          const complete = pick.updatedAt === undefined;
          candidates.push({
            node,
            replica: { digest, nodeId: node.id, complete, pieces: undefined, updatedAt: pick.updatedAt ?? 0 },
          });
        }
        return { candidates, withPartial };
      };
      const { candidates, withPartial } = await sampleOf(false);
      // The sample left partial holders out because it found `limit` complete ones; some
      // of those may be dead nodes', and then partial holders are wanted after all.
      if (!withPartial && candidates.length < query.limit) candidates.push(...(await sampleOf(true)).candidates);
      const ranked = rankCandidates(candidates, query);
      const partial = ranked.filter((c) => !c.replica.complete);
      if (partial.length) {
        const lists = await this.client.hmGet(
          this.blobKey(digest, 'pieces'),
          partial.map((c) => c.node.id),
        );
        partial.forEach((c, i) => {
          const list = lists[i];
          c.replica.pieces = typeof list === 'string' ? (JSON.parse(list) as number[]) : [];
        });
      }
      return ranked;
    });
  }

  /**
   * Locate's sample: from a random sample of each kind of holder (HRANDFIELD), holders in
   * the asker's zone first, then others, PICK_FACTOR x limit of them; the caller ranks those
   * by their nodes' load. Complete holders first; partial ones (updated after the cutoff)
   * only when fewer than `limit` complete ones were picked. Quarantined holders and the
   * asker are left out. Picked here rather than in a script: handing the sample to Lua
   * cost redis-server more than the sample itself. Returns the picks (updatedAt only for a
   * partial holder) and whether partial holders were sampled.
   */
  private async sampleHolders(
    digest: string,
    query: LocateQuery,
    sample: number,
    partialOnly: boolean,
  ): Promise<{ picks: HolderPick[]; withPartial: boolean }> {
    const threshold = query.quarantine?.threshold ?? 0;
    const [reports, complete] = await Promise.all([
      threshold > 0
        ? this.client.zRangeByScore(
            this.blobKey(digest, 'reports'),
            `(${query.now - query.quarantine!.windowMs}`,
            '+inf',
          )
        : [],
      partialOnly ? [] : this.client.hRandFieldCountWithValues(this.blobKey(digest, 'complete'), sample),
    ]);
    let banned: Set<string> | undefined;
    if (reports.length) {
      const counts = new Map<string, number>();
      for (const member of reports) {
        const newline = member.indexOf('\n');
        const node = newline < 0 ? member : member.slice(0, newline);
        const n = (counts.get(node) ?? 0) + 1;
        counts.set(node, n);
        if (n >= threshold) (banned ??= new Set()).add(node);
      }
    }
    const picks: HolderPick[] = [];
    const want = PICK_FACTOR * query.limit;
    const asker = query.asker;
    // A zone is [A-Za-z0-9._-]: a value "updatedAt:reg:zone" ends with ':' + zone exactly
    // when the holder is in it.
    const suffix = query.zone ? `:${query.zone}` : undefined;
    const pick = (entries: Array<{ field: string; value: string }>, kind: 'c' | 'p', cutoff: number): number => {
      const near: Array<{ field: string; value: string }> = [];
      const far: Array<{ field: string; value: string }> = [];
      for (const entry of entries) {
        if (entry.field === asker || banned?.has(entry.field)) continue;
        if (kind === 'p' && Number(entry.value.slice(0, entry.value.indexOf(':'))) <= cutoff) continue;
        (suffix !== undefined && entry.value.endsWith(suffix) ? near : far).push(entry);
      }
      let n = 0;
      for (const list of [near, far]) {
        for (const { field, value } of list) {
          if (n >= want) return n;
          const colon = value.indexOf(':');
          picks.push({
            id: field,
            reg: value.slice(colon + 1, value.indexOf(':', colon + 1)),
            updatedAt: kind === 'c' ? undefined : Number(value.slice(0, colon)),
          });
          n++;
        }
      }
      return n;
    };
    const withPartial = pick(complete, 'c', 0) < query.limit;
    if (withPartial) {
      const partial = await this.client.hRandFieldCountWithValues(this.blobKey(digest, 'partial'), sample);
      pick(partial, 'p', query.now - query.partialTtlMs);
    }
    return { picks, withPartial };
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
          [this.blobKey(id, 'source-pieces')],
          [record.fencingToken, JSON.stringify(record), PIECES_TTL_MS],
        )) as PiecesWrite,
    );
  }

  getPieces(id: string): Promise<PieceRecord | undefined> {
    return this.run(async () => {
      const value = await this.client.hGet(this.blobKey(id, 'source-pieces'), 'record');
      return typeof value === 'string' ? (JSON.parse(value) as PieceRecord) : undefined;
    });
  }

  reporters(digest: string, nodeId: string, since: number): Promise<string[]> {
    return this.run(async () => {
      const members = await this.client.zRangeByScore(this.blobKey(digest, 'reports'), `(${since}`, '+inf');
      const prefix = `${nodeId}\n`;
      return members.flatMap((m) => (m.startsWith(prefix) ? [m.slice(prefix.length)] : [])).sort();
    });
  }

  report(digest: string, nodeId: string, reporter: string, now: number, windowMs: number): Promise<number> {
    return this.run(async () =>
      Number(
        await this.eval(REPORT, [this.blobKey(digest, 'reports')], [`${nodeId}\n${reporter}`, now, windowMs, nodeId]),
      ),
    );
  }

  reportReplica(
    digest: string,
    nodeId: string,
    reporter: string,
    now: number,
    windowMs: number,
  ): Promise<number | undefined> {
    return this.run(async () => {
      const n = Number(
        await this.eval(
          REPORT,
          [this.blobKey(digest, 'reports'), this.blobKey(digest, 'complete'), this.blobKey(digest, 'partial')],
          [`${nodeId}\n${reporter}`, now, windowMs, nodeId],
        ),
      );
      return n < 0 ? undefined : n;
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
   * Drops the replicas of nodes whose registration lapsed (Redis already forgot the nodes'
   * records) and partial replicas not updated within the partial TTL (locate leaves them
   * out before that); reports and leases expire with their keys.
   */
  sweep(now: number, policy: SweepPolicy): Promise<void> {
    return this.run(async () => {
      // A bounded batch per shard and run, so one sweep stays within the operation timeout.
      const shards = await Promise.all(
        Array.from({ length: INDEX_SHARDS }, (_, shard) =>
          this.client.zRangeByScore(this.indexKey(shard), '-inf', now, {
            LIMIT: { offset: 0, count: Math.ceil(SWEEP_BATCH / INDEX_SHARDS) },
          }),
        ),
      );
      await Promise.all(
        shards.flat().map(async (id) => {
          // A node that beat again since the range was read keeps its replicas and its place.
          const reply = (await this.eval(END_NODE, [this.recordKey(id), this.holdsKey(id)], [now])) as Array<
            string | number
          >;
          if (Number(reply[0]) === -1) return;
          await Promise.all([
            this.dropHoldings(id, pairs(reply.slice(1).map(String))),
            this.eval(UNINDEX_LAPSED, [this.indexKeyOf(id)], [id, now]),
          ]);
        }),
      );
      const cutoff = now - policy.partialTtlMs;
      const stale = await this.client.zRangeByScore(this.partialsKey(), '-inf', cutoff, {
        LIMIT: { offset: 0, count: SWEEP_BATCH },
      });
      await Promise.all(
        stale.map(async (member) => {
          const [digest, node] = member.split('\n') as [string, string];
          const dropped = Number(
            await this.eval(
              DROP_STALE_PARTIAL,
              [this.blobKey(digest, 'partial'), this.blobKey(digest, 'pieces')],
              [node, cutoff],
            ),
          );
          // An update since the range was read moved the member's score: only a stale one goes.
          if (dropped === 1) await this.client.hDel(this.holdsKey(node), digest);
          if (dropped !== 0) await this.client.zRem(this.partialsKey(), member);
        }),
      );
    });
  }

  counts(now: number): Promise<StoreCounts> {
    return this.run(async () => {
      const [ids, blobs] = await Promise.all([this.indexedIds(`(${now}`, '+inf'), this.client.sCard(this.blobsKey())]);
      const sizes = await Promise.all(ids.map((id) => this.client.hLen(this.holdsKey(id))));
      return { liveNodes: ids.length, blobs: Number(blobs), replicas: sizes.reduce((a, b) => a + Number(b), 0) };
    });
  }

  ping(): Promise<void> {
    return this.run(async () => {
      if ('masters' in this.client) {
        const cluster = this.client;
        await Promise.all(cluster.masters.map(async (master) => (await cluster.nodeClient(master)).ping()));
      } else {
        await (this.client as RedisClientType).ping();
      }
    });
  }

  /** Deletes every key under the prefix, on every master of a cluster (tests and benchmarks clean up with it). */
  async dropAll(): Promise<void> {
    await this.run(async () => {
      const servers: RedisClientType[] =
        'masters' in this.client
          ? await Promise.all(this.client.masters.map((m) => (this.client as RedisClusterType).nodeClient(m)))
          : [this.client as RedisClientType];
      for (const server of servers) {
        for await (const keys of server.scanIterator({ MATCH: `${this.prefix}:*`, COUNT: 500 })) {
          const batch = (Array.isArray(keys) ? keys : [keys]) as string[];
          // One key per DEL: in a cluster a multi-key DEL must stay within one slot.
          await Promise.all(batch.map((key) => server.del(key)));
        }
      }
    });
  }

  async close(): Promise<void> {
    const subscriber = this.subscriber;
    if (subscriber?.isOpen) await subscriber.close().catch(() => undefined);
    else subscriber?.destroy();
    if (this.client.isOpen) await this.client.close().catch(() => undefined);
    else this.client.destroy();
  }
}

/** "redis+cluster://[auth@]h1:p1,h2:p2" -> ["redis://[auth@]h1:p1", …]; undefined for a plain URL. */
function clusterRootNodes(url: string): string[] | undefined {
  const match = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#]+)\/?$/.exec(url);
  if (!match) {
    if (/^rediss?\+cluster:/.test(url)) {
      throw new UsageError(`cannot read the Redis Cluster URL ${redact(url)}`, {
        hint: 'use redis+cluster://[user:password@]host:port[,host:port…] (no database: a cluster has only db 0)',
      });
    }
    return undefined;
  }
  const [, scheme, auth, hosts] = match as unknown as [string, string, string | undefined, string];
  return hosts.split(',').map((host) => `${scheme}://${auth ? `${auth}@` : ''}${host}`);
}

/** The index shard of a node id (FNV-1a): stable, and even over ids. */
function shardOf(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % INDEX_SHARDS;
}

/** [digest, reg, digest, reg, …] as holdings. */
function pairs(flat: string[]): Holding[] {
  const out: Holding[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push({ digest: flat[i]!, reg: flat[i + 1]! });
  return out;
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
