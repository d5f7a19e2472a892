// The control plane's HTTP API (fastify): nodes and their heartbeats, blob manifests,
// replicas, source keys, locate, reports, the original tool's /register and /locate, and
// health, readiness and metrics. Every input is validated before it reaches the store; a
// bad request is a 400 naming the field, an unreachable store a 503, never a 500.
import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ZodType } from 'zod';
import { sourceKey } from '../cache/source-key.js';
import { ConflictError, INTERNAL_ERROR_CODE, LoomError, NotFoundError, ValidationError } from '../core/errors.js';
import { TokenCheck } from './auth.js';
import { rankCandidates } from './locate.js';
import { ControlPlaneMetrics } from './metrics.js';
import type { RegistryStore } from './model.js';
import {
  digest as digestSchema,
  heartbeatBody,
  legacyModel,
  legacyRegisterBody,
  manifestBody,
  nodeId as nodeIdSchema,
  peersQuery,
  replicaBody,
  reportBody,
  sourceBody,
  sourceQuery,
} from './schemas.js';

export interface ControlPlaneOptions {
  store: RegistryStore;
  /** Bearer token every write must carry. Default: none (open). */
  token?: string;
  /** With a token: let reads through without it. Default false. */
  openReads?: boolean;
  /** How long a heartbeat keeps a node live. Default 30 s; nodes beat every third of it. */
  nodeTtlMs?: number;
  /** Reports older than this are forgotten. Default 10 min. */
  reportWindowMs?: number;
  /** Distinct reports within the window that keep a replica out of locate. Default 3. */
  reportThreshold?: number;
  /** pino logging (fastify's logger). Default off. */
  logger?: boolean;
}

export const CONTROL_PLANE_DEFAULTS = {
  nodeTtlMs: 30_000,
  reportWindowMs: 10 * 60_000,
  reportThreshold: 3,
  bodyLimit: 64 * 1024,
} as const;

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

function parse<T>(schema: ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = [where, ...issue.path.map(String)].filter(Boolean).join('.');
  throw new ValidationError(`invalid ${field}: ${issue.message}`);
}

/** The pseudo-blob the original tool's model names map to. */
function legacyDigest(model: string): string {
  return createHash('sha256').update(`loom-legacy-model:${model}`).digest('hex');
}

/** The original tool registered nodes by URL (or a bare name); derive a safe node id from it. */
function legacyNodeId(node: string): string {
  return nodeIdSchema.safeParse(node).success
    ? node
    : `legacy-${createHash('sha256').update(node).digest('hex').slice(0, 24)}`;
}

export async function buildControlPlane(options: ControlPlaneOptions): Promise<FastifyInstance> {
  const { store } = options;
  const ttlMs = options.nodeTtlMs ?? CONTROL_PLANE_DEFAULTS.nodeTtlMs;
  const reportWindowMs = options.reportWindowMs ?? CONTROL_PLANE_DEFAULTS.reportWindowMs;
  const reportThreshold = options.reportThreshold ?? CONTROL_PLANE_DEFAULTS.reportThreshold;
  const tokenCheck = options.token ? new TokenCheck(options.token) : undefined;
  const metrics = new ControlPlaneMetrics(store);

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: CONTROL_PLANE_DEFAULTS.bodyLimit,
    // Past the longest valid id (128), so an overlong one reaches validation and gets its 400.
    routerOptions: { maxParamLength: 512 },
  });

  if (tokenCheck) {
    app.addHook('onRequest', async (request) => {
      const path = request.url.split('?')[0]!;
      if (OPEN_ROUTES.has(path)) return;
      if (WRITE_METHODS.has(request.method) || !options.openReads) tokenCheck.verify(request.headers.authorization);
    });
  }

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requests.inc({ route, method: request.method, status: String(reply.statusCode) });
    metrics.latency.observe({ route, method: request.method }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    if (error instanceof LoomError) {
      if (error.httpStatus >= 500) request.log.warn({ err: error }, 'request failed');
      return reply.status(error.httpStatus).send({ error: { code: error.code, message: error.message } });
    }
    // fastify's own rejections of malformed requests: bad JSON, too large, wrong type.
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      const message =
        error.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? `request body larger than ${CONTROL_PLANE_DEFAULTS.bodyLimit} bytes`
          : error.message;
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
  app.put('/v1/nodes/:id', async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const id = parse(nodeIdSchema, request.params.id, 'id');
    const body = parse(heartbeatBody, request.body, 'body');
    const expiresAt = Date.now() + ttlMs;
    await store.heartbeat({ id, url: body.url, zone: body.zone, freeUploadSlots: body.freeUploadSlots, expiresAt });
    return { id, expiresAt, ttlSeconds: ttlMs / 1000, heartbeatIntervalSeconds: ttlMs / 3000 };
  });

  app.delete('/v1/nodes/:id', async (request: FastifyRequest<{ Params: { id: string } }>, reply) => {
    const id = parse(nodeIdSchema, request.params.id, 'id');
    if (!(await store.removeNode(id))) throw new NotFoundError(`no node ${id}`);
    return reply.status(204).send();
  });

  app.get('/v1/nodes', async () => ({ nodes: await store.liveNodes(Date.now()) }));

  // Blobs and replicas
  app.put('/v1/blobs/:digest', async (request: FastifyRequest<{ Params: { digest: string } }>, reply) => {
    const digest = parse(digestSchema, request.params.digest, 'digest');
    const body = parse(manifestBody, request.body, 'body');
    const outcome = await store.putManifest({ digest, ...body });
    if (outcome === 'conflict') {
      throw new ConflictError(`blob ${digest} already has a different manifest (first writer wins)`);
    }
    return reply.status(outcome === 'created' ? 201 : 200).send({ digest, outcome });
  });

  app.get('/v1/blobs/:digest', async (request: FastifyRequest<{ Params: { digest: string } }>) => {
    const digest = parse(digestSchema, request.params.digest, 'digest');
    const manifest = await store.getManifest(digest);
    if (!manifest) throw new NotFoundError(`no manifest for blob ${digest}`);
    return manifest;
  });

  app.put(
    '/v1/blobs/:digest/replicas/:node',
    async (request: FastifyRequest<{ Params: { digest: string; node: string } }>) => {
      const digest = parse(digestSchema, request.params.digest, 'digest');
      const node = parse(nodeIdSchema, request.params.node, 'node');
      const body = parse(replicaBody, request.body, 'body');
      if (!(await store.isLive(node, Date.now())))
        throw new NotFoundError(`node ${node} is not live`, { hint: 'send its heartbeat (PUT /v1/nodes/:id) first' });
      await store.putReplica({
        digest,
        nodeId: node,
        complete: body.complete,
        pieces: body.complete ? undefined : body.pieces,
        updatedAt: Date.now(),
      });
      return { digest, node, complete: body.complete };
    },
  );

  app.delete(
    '/v1/blobs/:digest/replicas/:node',
    async (request: FastifyRequest<{ Params: { digest: string; node: string } }>, reply) => {
      const digest = parse(digestSchema, request.params.digest, 'digest');
      const node = parse(nodeIdSchema, request.params.node, 'node');
      if (!(await store.removeReplica(digest, node)))
        throw new NotFoundError(`node ${node} holds no replica of ${digest}`);
      return reply.status(204).send();
    },
  );

  app.get(
    '/v1/blobs/:digest/peers',
    { schema: { response: { 200: PEERS_RESPONSE } } },
    async (request: FastifyRequest<{ Params: { digest: string } }>) => {
      const digest = parse(digestSchema, request.params.digest, 'digest');
      const query = parse(peersQuery, request.query, 'query');
      const candidates = await store.candidates(digest, Date.now(), {
        windowMs: reportWindowMs,
        threshold: reportThreshold,
      });
      const ranked = rankCandidates(candidates, {
        asker: query.node,
        zone: query.zone,
        limit: query.limit,
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

  // Sources
  app.put('/v1/sources', async (request: FastifyRequest) => {
    const body = parse(sourceBody, request.body, 'body');
    const key = normaliseKey(body.key);
    await store.putSource(key, body.digest);
    return { key, digest: body.digest };
  });

  app.get('/v1/sources', async (request: FastifyRequest) => {
    const query = parse(sourceQuery, request.query, 'query');
    const key = normaliseKey(query.key);
    const digest = await store.getSource(key);
    if (!digest) throw new NotFoundError(`no digest recorded for ${key}`);
    return { key, digest };
  });

  // Reports
  app.post('/v1/reports', async (request: FastifyRequest, reply: FastifyReply) => {
    const body = parse(reportBody, request.body, 'body');
    const reports = await store.report(body.digest, body.node, body.reporter, Date.now(), reportWindowMs);
    return reply
      .status(202)
      .send({ digest: body.digest, node: body.node, reports, quarantined: reports >= reportThreshold });
  });

  // The original tool's API, kept for its users' scripts.
  app.post('/register', async (request: FastifyRequest) => {
    const body = parse(legacyRegisterBody, request.body, 'body');
    const id = legacyNodeId(body.node);
    const url = /^https?:\/\//.test(body.node) ? body.node : `http://${body.node}`;
    await store.heartbeat({ id, url, zone: undefined, freeUploadSlots: 0, expiresAt: Date.now() + ttlMs });
    await store.putReplica({
      digest: legacyDigest(body.model),
      nodeId: id,
      complete: true,
      pieces: undefined,
      updatedAt: Date.now(),
    });
    return { ok: true, node: body.node, model: body.model, ttlSeconds: ttlMs / 1000 };
  });

  app.get('/locate/:model', async (request: FastifyRequest<{ Params: { model: string } }>) => {
    const model = parse(legacyModel, request.params.model, 'model');
    const candidates = await store.candidates(legacyDigest(model), Date.now());
    return { model, nodes: candidates.map((c) => c.node.url) };
  });

  return app;
}

/** http(s) keys are normalised like the cache's (presigned signatures stripped). */
function normaliseKey(key: string): string {
  return key.startsWith('http://') || key.startsWith('https://') ? sourceKey(key) : key;
}
