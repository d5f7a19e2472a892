// The control plane's HTTP API (fastify): nodes and their heartbeats, blob manifests,
// replicas, source keys, locate, reports, leases, the original tool's /register and
// /locate, and health, readiness and metrics. Every input is validated by the route's
// schema before the handler runs; a bad request is a 400 naming the field, a caller without
// the right credential a 401 or 403, an unreachable store a 503, never a 500.
import { createHash, randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { sourceKey } from '../cache/source-key.js';
import { sourceBlobId } from '../cache/source-id.js';
import {
  ConflictError,
  ForbiddenError,
  INTERNAL_ERROR_CODE,
  LoomError,
  NotFoundError,
  ValidationError,
} from '../core/errors.js';
import { Authenticator, NODE_HEADER, requireAdmin, requireSelf, type Caller } from './auth.js';
import { ControlPlaneMetrics } from './metrics.js';
import { NEVER, type RegistryStore } from './model.js';
import {
  digestParams,
  heartbeatBody,
  leaseBody,
  leaseParams,
  legacyModelParams,
  legacyRegisterBody,
  manifestBody,
  nodeParams,
  peersQuery,
  piecesBody,
  piecesParams,
  replicaBody,
  replicaParams,
  reportBody,
  sourceBody,
  sourceQuery,
} from './schemas.js';
import { zodValidatorCompiler, type ZodTypeProvider } from './zod-provider.js';
import { DEFAULTS } from '../core/defaults.js';
import { manifestFingerprint, samePieces } from '../core/manifest.js';

export interface ControlPlaneOptions {
  store: RegistryStore;
  /** Admin bearer token: can do everything. Default: none. */
  token?: string;
  /**
   * Cluster secret: a node authenticates with hex(HMAC-SHA256(secret, "loom-node:" + id))
   * (see nodeToken) and may then write only as itself. Default: none.
   */
  clusterSecret?: string;
  /** With a token or cluster secret: let reads through without one. Default false. */
  openReads?: boolean;
  /** How long a heartbeat keeps a node live. Default 30 s; nodes beat every third of it. */
  nodeTtlMs?: number;
  /** A partial replica not updated for this long is left out of locate. Default 30 s. */
  partialTtlMs?: number;
  /** Reports older than this are forgotten. Default 10 min. */
  reportWindowMs?: number;
  /** Distinct reporters within the window that keep a replica out of locate. Default 3. */
  reportThreshold?: number;
  /** How long a lease lasts unless renewed. Default 5 s. */
  leaseTtlMs?: number;
  /**
   * How long a legacy `/register` lasts unless repeated. Default: for as long as the store
   * keeps it (the original tool's registrations lived as long as its process).
   */
  legacyTtlMs?: number;
  /** How often lapsed nodes, stale partials, old reports and leases are deleted. Default 10 s. */
  sweepIntervalMs?: number;
  /** pino logging (fastify's logger). Default off. */
  logger?: boolean;
}

export const CONTROL_PLANE_DEFAULTS = DEFAULTS.controlPlane;

const WRITE_METHODS = new Set(['PUT', 'POST', 'DELETE']);

/** Locate is the hot route: a response schema lets fastify serialise it without JSON.stringify. */
const PEERS_RESPONSE = {
  type: 'object',
  properties: {
    digest: { type: 'string' },
    peers: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          url: { type: 'string' },
          zone: { type: ['string', 'null'] },
          complete: { type: 'boolean' },
          pieces: { type: ['array', 'null'], items: { type: 'integer' } },
          freeUploadSlots: { type: 'integer' },
        },
      },
    },
  },
} as const;
const OPEN_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);
const OPEN_CALLER: Caller = { kind: 'open' };

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling, from the bearer token (set before any handler runs). */
    caller: Caller;
  }
}

// Manifest reports are kept with the replicas' (same window, same sweep) under names no node
// can have ('/' is not in a node id): the reporters of a piece list, by its fingerprint, and
// the fingerprints dropped (as the "reporters" of DROPPED_MANIFESTS).
const manifestReportsOf = (fingerprint: string) => `manifest/${fingerprint}`;
const DROPPED_MANIFESTS = 'manifest/dropped';
// The node that published a dropped piece list (its one "reporter"), for the same window: a
// forger that reports its own list is no reporter of it (see requireReporterAfterDrop).
const manifestPublisherOf = (fingerprint: string) => `manifest-publisher/${fingerprint}`;

/** The pseudo-blob the original tool's model names map to. */
function legacyDigest(model: string): string {
  return createHash('sha256').update(`loom-legacy-model:${model}`).digest('hex');
}

/** Legacy registrations get ids of their own, so they never overwrite an agent's record. */
function legacyNodeId(node: string): string {
  return `legacy-${createHash('sha256').update(node).digest('hex').slice(0, 24)}`;
}

/** The node a request names, for a node token: X-Loom-Node, else the route's node or asker. */
function claimedNode(request: FastifyRequest): string | undefined {
  const header = request.headers[NODE_HEADER];
  if (typeof header === 'string') return header;
  const params = request.params as { id?: unknown; node?: unknown } | undefined;
  const query = request.query as { node?: unknown } | undefined;
  const route = request.routeOptions.url ?? '';
  for (const value of [route.startsWith('/v1/nodes/') ? params?.id : undefined, params?.node, query?.node]) {
    if (typeof value === 'string') return value;
  }
  return undefined;
}

/** What the control plane says when its SQLite store's checkpoint starts failing (`error`) or works again. */
export function checkpointMessage(error: string | undefined): string {
  return error === undefined
    ? 'the SQLite store checkpoints its WAL again'
    : `the SQLite store cannot checkpoint its WAL (retrying): ${error}`;
}

export async function buildControlPlane(options: ControlPlaneOptions): Promise<FastifyInstance> {
  const { store } = options;
  const ttlMs = options.nodeTtlMs ?? CONTROL_PLANE_DEFAULTS.nodeTtlMs;
  const partialTtlMs = options.partialTtlMs ?? CONTROL_PLANE_DEFAULTS.partialTtlMs;
  const reportWindowMs = options.reportWindowMs ?? CONTROL_PLANE_DEFAULTS.reportWindowMs;
  const reportThreshold = options.reportThreshold ?? CONTROL_PLANE_DEFAULTS.reportThreshold;
  const leaseTtlMs = options.leaseTtlMs ?? CONTROL_PLANE_DEFAULTS.leaseTtlMs;
  const sweepIntervalMs = options.sweepIntervalMs ?? CONTROL_PLANE_DEFAULTS.sweepIntervalMs;
  const auth = new Authenticator({ token: options.token, clusterSecret: options.clusterSecret });
  const metrics = new ControlPlaneMetrics(store);

  const fastify = Fastify({
    logger: options.logger ?? false,
    bodyLimit: CONTROL_PLANE_DEFAULTS.bodyLimit,
    // Past the longest valid id (128), so an overlong one reaches validation and gets its 400.
    routerOptions: { maxParamLength: 512 },
  });
  fastify.setValidatorCompiler(zodValidatorCompiler);
  const app = fastify.withTypeProvider<ZodTypeProvider>();

  // The original tool's README registers with `curl -d '{...}'`, which curl sends as a
  // form: a body that looks like JSON is read as JSON, anything else as form fields. Text
  // bodies are read the same way; other types get a 415 that says what to send.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(
    ['application/x-www-form-urlencoded', 'text/plain'],
    { parseAs: 'string' },
    (_request, body, done) => {
      const text = String(body).trim();
      if (text.startsWith('{') || text.startsWith('[')) {
        try {
          done(null, JSON.parse(text));
        } catch {
          done(new ValidationError('invalid body: not valid JSON'), undefined);
        }
        return;
      }
      done(null, Object.fromEntries(new URLSearchParams(text)));
    },
  );

  app.decorateRequest('caller', null as never);
  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?')[0]!;
    if (OPEN_ROUTES.has(path)) {
      request.caller = { kind: 'open' };
      return;
    }
    // An open control plane (no token, no secret) has no caller to tell apart.
    request.caller = auth.required ? auth.identify(request.headers.authorization, claimedNode(request)) : OPEN_CALLER;
    if (WRITE_METHODS.has(request.method) || !options.openReads) Authenticator.requireCredential(request.caller);
  });

  app.addHook('onResponse', async (request, reply) => {
    metrics.record(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    if (error instanceof LoomError) {
      if (error.httpStatus >= 500) request.log.warn({ err: error }, 'request failed');
      return reply.status(error.httpStatus).send({ error: { code: error.code, message: error.message } });
    }
    if (error.statusCode === 415) {
      return reply.status(415).send({
        error: {
          code: 'LOOM_ERR_VALIDATION',
          message: `${error.message}; send JSON with -H 'Content-Type: application/json'`,
        },
      });
    }
    // fastify's own rejections of malformed requests: bad JSON, too large, wrong type.
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      const limit = request.routeOptions.bodyLimit ?? CONTROL_PLANE_DEFAULTS.bodyLimit;
      const message =
        error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `request body larger than ${limit} bytes` : error.message;
      return reply.status(400).send({ error: { code: 'LOOM_ERR_VALIDATION', message } });
    }
    request.log.error({ err: error }, 'unexpected error');
    return reply.status(500).send({ error: { code: INTERNAL_ERROR_CODE, message: 'internal error' } });
  });

  app.setNotFoundHandler((request, reply) =>
    reply
      .status(404)
      .send({ error: { code: 'LOOM_ERR_NOT_FOUND', message: `no route ${request.method} ${request.url}` } }),
  );

  // The sweep runs on a timer, so no request pays for deleting what lapsed.
  const sweep = setInterval(() => {
    store.sweep(Date.now(), { partialTtlMs, reportWindowMs }).catch((err: unknown) => {
      app.log.warn({ err }, 'sweep failed');
    });
  }, sweepIntervalMs);
  sweep.unref();
  app.addHook('onClose', async () => clearInterval(sweep));

  // A checkpoint that fails fails no request, but the SQLite WAL then grows until one works:
  // said once when it starts failing (the thread posts a failure once, not every round) and
  // once when it works again; loom_cp_store_checkpoint_failing says it meanwhile.
  store.onCheckpointChange?.((error) => {
    if (error === undefined) app.log.info(checkpointMessage(error));
    else app.log.error({ checkpointError: error }, checkpointMessage(error));
  });

  app.get('/healthz', async () => ({ ok: true }));

  app.get('/readyz', async (_request, reply) => {
    await store.ping();
    return reply.send({ ok: true, store: store.kind });
  });

  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(body);
  });

  // Nodes
  app.put('/v1/nodes/:id', { schema: { params: nodeParams, body: heartbeatBody } }, async (request) => {
    const { id } = request.params;
    requireSelf(request.caller, id, 'heartbeat');
    const { body } = request;
    const now = Date.now();
    const expiresAt = now + ttlMs;
    const { resync } = await store.heartbeat(
      { id, url: body.url, zone: body.zone, freeUploadSlots: body.freeUploadSlots, expiresAt, epoch: body.epoch },
      now,
    );
    return { id, expiresAt, ttlSeconds: ttlMs / 1000, heartbeatIntervalSeconds: ttlMs / 3000, resync };
  });

  app.delete('/v1/nodes/:id', { schema: { params: nodeParams } }, async (request, reply) => {
    const { id } = request.params;
    requireSelf(request.caller, id, 'deregister');
    if (!(await store.removeNode(id))) throw new NotFoundError(`no node ${id}`);
    return reply.status(204).send();
  });

  app.get('/v1/nodes', async () => ({ nodes: await store.liveNodes(Date.now()) }));

  // Blobs and replicas
  app.put(
    '/v1/blobs/:digest',
    { schema: { params: digestParams, body: manifestBody }, bodyLimit: CONTROL_PLANE_DEFAULTS.manifestBodyLimit },
    async (request, reply) => {
      Authenticator.requireCredential(request.caller);
      const { digest } = request.params;
      if (request.caller.kind === 'node' && !(await store.getManifest(digest)))
        await requireReporterAfterDrop(request.caller.id, digest);
      // Who published it, kept with it: that node's reports never count against it.
      const publisher = request.caller.kind === 'node' ? { publisher: request.caller.id } : {};
      const outcome = await store.putManifest({ digest, ...request.body, ...publisher });
      if (outcome === 'conflict') {
        throw new ConflictError(`blob ${digest} already has a different manifest (first writer wins)`, {
          hint: 'an admin removes a bad manifest with DELETE /v1/blobs/:digest',
        });
      }
      return reply.status(outcome === 'created' ? 201 : 200).send({ digest, outcome });
    },
  );

  /**
   * For the report window after a manifest was dropped on reports, only a node that reported
   * it publishes the next one: those nodes are fetching the pinned bytes from the origin, and
   * any other (the forger first) could otherwise race them with a forged list of its own.
   */
  async function requireReporterAfterDrop(node: string, digest: string): Promise<void> {
    const since = Date.now() - reportWindowMs;
    const dropped = await store.reporters(digest, DROPPED_MANIFESTS, since);
    if (dropped.length === 0) return;
    for (const fingerprint of dropped) {
      // Its publisher may report it too (a forger doing so would then race the honest
      // reporters with a second forged list): it never counts as one of its reporters.
      if ((await store.reporters(digest, manifestPublisherOf(fingerprint), since)).includes(node)) continue;
      if ((await store.reporters(digest, manifestReportsOf(fingerprint), since)).includes(node)) return;
    }
    throw new ConflictError(
      `the manifest of ${digest} was dropped on nodes' reports: until the reports age out, only those nodes publish the next one`,
      { hint: 'an admin may publish one at any time' },
    );
  }

  app.get('/v1/blobs/:digest', { schema: { params: digestParams } }, async (request) => {
    const { digest } = request.params;
    const stored = await store.getManifest(digest);
    if (!stored) throw new NotFoundError(`no manifest for blob ${digest}`);
    // Who published it is the control plane's to weigh reports by, not part of the manifest.
    const manifest = { ...stored };
    delete manifest.publisher;
    return manifest;
  });

  app.delete('/v1/blobs/:digest', { schema: { params: digestParams } }, async (request, reply) => {
    const { digest } = request.params;
    requireAdmin(request.caller, 'remove a manifest');
    if (!(await store.deleteManifest(digest))) throw new NotFoundError(`no manifest for blob ${digest}`);
    return reply.status(204).send();
  });

  app.put(
    '/v1/blobs/:digest/replicas/:node',
    { schema: { params: replicaParams, body: replicaBody } },
    async (request) => {
      const { digest, node } = request.params;
      requireSelf(request.caller, node, 'announce a replica');
      const { body } = request;
      const now = Date.now();
      const recorded = await store.putReplica(
        {
          digest,
          nodeId: node,
          complete: body.complete,
          pieces: body.complete ? undefined : (body.pieces ?? []),
          updatedAt: now,
        },
        now,
      );
      if (!recorded)
        throw new NotFoundError(`node ${node} is not live`, { hint: 'send its heartbeat (PUT /v1/nodes/:id) first' });
      return { digest, node, complete: body.complete };
    },
  );

  app.delete('/v1/blobs/:digest/replicas/:node', { schema: { params: replicaParams } }, async (request, reply) => {
    const { digest, node } = request.params;
    requireSelf(request.caller, node, 'withdraw a replica');
    if (!(await store.removeReplica(digest, node)))
      throw new NotFoundError(`node ${node} holds no replica of ${digest}`);
    return reply.status(204).send();
  });

  app.get(
    '/v1/blobs/:digest/peers',
    { schema: { params: digestParams, querystring: peersQuery, response: { 200: PEERS_RESPONSE } } },
    async (request) => {
      const { digest } = request.params;
      const query = request.query;
      const ranked = await store.locate(digest, {
        now: Date.now(),
        asker: query.node,
        zone: query.zone,
        limit: query.limit,
        partialTtlMs,
        quarantine: { windowMs: reportWindowMs, threshold: reportThreshold },
      });
      return {
        digest,
        peers: ranked.map(({ node, replica }) => ({
          id: node.id,
          url: node.url,
          zone: node.zone ?? null,
          complete: replica.complete,
          pieces: replica.pieces ?? null,
          freeUploadSlots: node.freeUploadSlots,
        })),
      };
    },
  );

  // Leases: who fetches a blob from its origin while the others take its pieces.
  app.post('/v1/blobs/:digest/leases', { schema: { params: digestParams, body: leaseBody } }, async (request) => {
    const { digest } = request.params;
    const { node, slots } = request.body;
    requireSelf(request.caller, node, 'take a lease');
    const grant = await store.acquireLease(
      digest,
      node,
      slots,
      leaseTtlMs,
      Date.now(),
      randomBytes(16).toString('hex'),
    );
    return grant.granted ? { ...grant, ttlSeconds: leaseTtlMs / 1000 } : grant;
  });

  /** The live lease a token names, if the caller may act on it. */
  async function ownLease(request: { caller: Caller; params: { digest: string; token: string } }) {
    const { digest, token } = request.params;
    Authenticator.requireCredential(request.caller);
    const lease = await store.getLease(digest, token, Date.now());
    if (!lease)
      throw new NotFoundError(`no live lease ${token} on ${digest}`, {
        hint: 'it lapsed or was released: take a new one with POST /v1/blobs/:digest/leases',
      });
    requireSelf(request.caller, lease.node, 'act on a lease');
    return lease;
  }

  app.put('/v1/blobs/:digest/leases/:token', { schema: { params: leaseParams } }, async (request) => {
    const { digest, token } = request.params;
    await ownLease(request);
    const lease = await store.renewLease(digest, token, leaseTtlMs, Date.now());
    if (!lease) throw new NotFoundError(`no live lease ${token} on ${digest}`);
    return { granted: true, ...lease, ttlSeconds: leaseTtlMs / 1000 };
  });

  app.delete('/v1/blobs/:digest/leases/:token', { schema: { params: leaseParams } }, async (request, reply) => {
    const { digest, token } = request.params;
    await ownLease(request);
    await store.releaseLease(digest, token);
    return reply.status(204).send();
  });

  // Sources
  app.put('/v1/sources', { schema: { body: sourceBody } }, async (request, reply) => {
    const { body, caller } = request;
    Authenticator.requireCredential(caller);
    const key = normaliseKey(body.key);
    if (body.replace) requireAdmin(caller, 'repoint a source');
    if (caller.kind === 'node') await requireSourceLeaseHolder(caller.id, key, body.digest, body.lease);
    const outcome = await store.putSource(key, body.digest, body.replace ?? false);
    if (outcome === 'conflict') {
      const current = await store.getSource(key);
      throw new ConflictError(`${key} is already mapped to ${current ?? 'another digest'}`, {
        hint: 'an admin repoints it with {"replace": true}',
      });
    }
    return reply.send({ key, digest: body.digest, outcome });
  });

  /**
   * A node vouches for a source's digest only as the holder of the lease on the SOURCE's id
   * (the one that fetched it from the origin under that lease), and only for a digest whose
   * manifest holds exactly the piece digests it published under that lease as it hashed
   * them (what its followers checked pieces against). A lease on the digest itself proves
   * nothing: any node may take one on a digest of its own, and mapped a URL to its bytes
   * that way, with a manifest of its own to check them against.
   */
  async function requireSourceLeaseHolder(node: string, key: string, digest: string, token: string | undefined) {
    const id = sourceBlobId(key);
    const lease = token ? await store.getLease(id, token, Date.now()) : undefined;
    if (!lease || lease.node !== node) {
      throw new ForbiddenError(`node ${node} holds no lease on ${key}: it cannot map it to a digest`, {
        hint: `a source is mapped by the node that fetched it from the origin under the lease on its id (${id}), or by an admin`,
      });
    }
    const [manifest, record] = await Promise.all([store.getManifest(digest), store.getPieces(id)]);
    const same =
      manifest !== undefined &&
      record !== undefined &&
      record.fencingToken === lease.fencingToken &&
      samePieces(record, manifest);
    if (!same) {
      throw new ForbiddenError(
        `node ${node} cannot map ${key} to ${digest}: ${manifest ? "the blob's manifest is not the piece list it published under its lease" : 'the blob has no manifest'}`,
        {
          hint: 'the lease holder publishes its piece digests (PUT /v1/sources/:id/pieces), then the manifest, then the mapping',
        },
      );
    }
  }

  app.get('/v1/sources', { schema: { querystring: sourceQuery } }, async (request) => {
    const key = normaliseKey(request.query.key);
    const digest = await store.getSource(key);
    if (!digest) throw new NotFoundError(`no digest recorded for ${key}`);
    return { key, digest };
  });

  // Piece digests as the lease holder hashes them, under the source's id while the blob's
  // digest is unknown: followers check each piece a peer sends against them. Only the
  // holder of a live lease on the id writes them (a node may not vouch for bytes it did not
  // hash from the origin); a holder whose lease was taken over (older fencing token) cannot
  // overwrite its successor's record.
  app.put(
    '/v1/sources/:id/pieces',
    {
      schema: { params: piecesParams, body: piecesBody },
      bodyLimit: CONTROL_PLANE_DEFAULTS.manifestBodyLimit,
    },
    async (request) => {
      const { caller, body } = request;
      const { id } = request.params;
      Authenticator.requireCredential(caller);
      const lease = await store.getLease(id, body.lease, Date.now());
      if (!lease || (caller.kind === 'node' && lease.node !== caller.id)) {
        throw new ForbiddenError(
          `${caller.kind === 'node' ? `node ${caller.id}` : 'the caller'} holds no live lease on ${id}: it cannot publish its piece digests`,
          { hint: "piece digests come from the node fetching the blob from its origin under the blob's lease" },
        );
      }
      const outcome = await store.putPieces(id, {
        size: body.size,
        pieceSize: body.pieceSize,
        pieces: body.pieces,
        fencingToken: lease.fencingToken,
        updatedAt: Date.now(),
      });
      if (outcome === 'stale') {
        throw new ConflictError(`a newer lease holder has published the pieces of ${id}`, {
          hint: 'the lease was taken over; this node no longer leads',
        });
      }
      return { id, pieces: body.pieces.length, fencingToken: lease.fencingToken };
    },
  );

  app.get('/v1/sources/:id/pieces', { schema: { params: piecesParams } }, async (request) => {
    const { id } = request.params;
    const record = await store.getPieces(id);
    if (!record) throw new NotFoundError(`no piece digests published for ${id}`);
    return {
      id,
      size: record.size,
      pieceSize: record.pieceSize,
      pieces: record.pieces,
      fencingToken: record.fencingToken,
    };
  });

  // Reports: the reporter is the authenticated node; only an admin or an open control plane names one.
  app.post('/v1/reports', { schema: { body: reportBody } }, async (request, reply) => {
    const { body, caller } = request;
    let reporter: string;
    if (caller.kind === 'node') {
      if (body.reporter !== undefined && body.reporter !== caller.id)
        throw new ForbiddenError(`node ${caller.id} cannot report as node ${body.reporter}`, {
          hint: 'a node reports as itself: leave out body.reporter',
        });
      reporter = caller.id;
    } else if (body.reporter !== undefined) {
      reporter = body.reporter;
    } else {
      throw new ValidationError('invalid body.reporter: required unless the caller authenticates as a node');
    }
    const now = Date.now();
    if (body.kind === 'manifest') {
      // A manifest is proved wrong by any node with a pin, so the same rule as a replica's
      // (distinct reporters within the window, README "Choices"): one lying node cannot drop
      // a good manifest and race to publish one of its own in its place. Its reports are
      // counted against this very piece list: a manifest published after the drop starts at zero.
      const fingerprint = body.manifest!;
      const current = await store.getManifest(body.digest);
      const isCurrent = current !== undefined && manifestFingerprint(current) === fingerprint;
      // Recorded only against the manifest the blob has, or one dropped within the window (a
      // late reporter may then publish the next one): any other fingerprint (an unknown digest,
      // a list never published) proves nothing, and each one was a row or a Redis member
      // kept for the window, read by every locate of the digest.
      if (
        !isCurrent &&
        !(await store.reporters(body.digest, DROPPED_MANIFESTS, now - reportWindowMs)).includes(fingerprint)
      ) {
        throw new ConflictError(
          `manifest ${fingerprint} is not the manifest of blob ${body.digest} (nor one dropped within the report window): nothing recorded`,
          { hint: 'report the fingerprint (manifestFingerprint) of the manifest GET /v1/blobs/:digest returned' },
        );
      }
      await store.report(body.digest, manifestReportsOf(fingerprint), reporter, now, reportWindowMs);
      // Its publisher's own reports are not counted: a forger reporting its own list would
      // otherwise need one honest reporter fewer to drop it, and become one who may publish next.
      const publisher = isCurrent ? current.publisher : undefined;
      const reporters = await store.reporters(body.digest, manifestReportsOf(fingerprint), now - reportWindowMs);
      const reports = reporters.filter((r) => r !== publisher).length;
      let dropped = false;
      if (isCurrent && reports >= reportThreshold) {
        dropped = await store.deleteManifestIf(current);
        if (dropped) {
          // Kept, like the reports, for the window: who may publish the next one (see above).
          await store.report(body.digest, DROPPED_MANIFESTS, fingerprint, now, reportWindowMs);
          if (publisher !== undefined)
            await store.report(body.digest, manifestPublisherOf(fingerprint), publisher, now, reportWindowMs);
          request.log.warn({ digest: body.digest, reports }, 'manifest dropped: reported by distinct nodes');
        }
      }
      return reply
        .status(202)
        .send({ digest: body.digest, kind: body.kind, manifest: fingerprint, reporter, reports, dropped });
    }
    const node = body.node!;
    // Counted only against a node that holds a replica of the digest (or was reported under it
    // within the window): a report naming any other id proves nothing, and each made-up id was
    // a row or a Redis member kept for the window, read by every locate of the digest.
    const reports = await store.reportReplica(body.digest, node, reporter, now, reportWindowMs);
    if (reports === undefined)
      throw new ConflictError(
        `node ${node} holds no replica of blob ${body.digest} (nor was reported under it within the report window): nothing recorded`,
        { hint: 'report a node that GET /v1/blobs/:digest/locate returned for this digest' },
      );
    return reply
      .status(202)
      .send({ digest: body.digest, kind: body.kind, node, reporter, reports, quarantined: reports >= reportThreshold });
  });

  // The original tool's API, kept for its users' scripts: a node comes back as registered.
  app.post('/register', { schema: { body: legacyRegisterBody } }, async (request) => {
    requireAdmin(request.caller, 'use the legacy /register');
    const { node, model } = request.body;
    const id = legacyNodeId(node);
    const now = Date.now();
    const expiresAt = options.legacyTtlMs === undefined ? NEVER : now + options.legacyTtlMs;
    await store.heartbeat({ id, url: node, zone: undefined, freeUploadSlots: 0, expiresAt, epoch: undefined }, now);
    await store.putReplica(
      { digest: legacyDigest(model), nodeId: id, complete: true, pieces: undefined, updatedAt: now },
      now,
    );
    return {
      ok: true,
      node,
      model,
      ttlSeconds: options.legacyTtlMs === undefined ? null : options.legacyTtlMs / 1000,
    };
  });

  app.get('/locate/:model', { schema: { params: legacyModelParams } }, async (request) => {
    const { model } = request.params;
    const candidates = await store.locate(legacyDigest(model), {
      now: Date.now(),
      asker: undefined,
      zone: undefined,
      limit: CONTROL_PLANE_DEFAULTS.legacyLocateLimit,
      partialTtlMs,
    });
    return { model, nodes: candidates.map((c) => c.node.url) };
  });

  return fastify;
}

/** http(s) keys are normalised like the cache's (presigned signatures stripped). */
function normaliseKey(key: string): string {
  return key.startsWith('http://') || key.startsWith('https://') ? sourceKey(key) : key;
}
