// The control plane as nodes use it: heartbeats, announcements and locate. A control plane
// that does not answer within the timeout means "no peers": the fetch goes to the origin,
// so the control plane can never slow a download down.
import { createHmac } from 'node:crypto';
import { DEFAULTS } from '../core/defaults.js';

export interface ControlPlaneClientOptions {
  baseUrl: string;
  /** Bearer token: the shared admin token, or this node's own (see nodeToken). */
  token?: string;
  /** Per request. Default 2 s. */
  timeoutMs?: number;
  /** The node this client speaks for, sent as X-Loom-Node (needed with per-node tokens). */
  nodeId?: string;
}

export interface PeerInfo {
  id: string;
  url: string;
  zone: string | null;
  complete: boolean;
  pieces: number[] | null;
  freeUploadSlots: number;
}

export interface HeartbeatBody {
  url: string;
  zone?: string;
  freeUploadSlots?: number;
  /** Boot id of the agent: a new one makes the control plane drop this node's older replicas. */
  epoch?: string;
}

/** What a node says it holds of a blob: all of it, or the verified pieces listed. */
export interface ReplicaAnnouncement {
  complete: boolean;
  pieces?: number[];
}

/** A manifest as published to the control plane. */
export interface ManifestRecord {
  digest: string;
  size: number;
  pieceSize: number;
  pieces: string[];
  /** What the manifest's digest was checked against (the control plane requires it). */
  verifiedAgainst: 'sha256-pinned' | 'hub-sha256' | 's3-checksum' | 'first-origin-fetch';
}

/**
 * The outcome of one call, never thrown: the status and parsed body when the control plane
 * answered, or `status: undefined` with the reason when it could not be reached in time.
 */
export type ControlPlaneAnswer =
  | { status: number; ok: boolean; body: unknown; message: string }
  | { status: undefined; ok: false; body: undefined; message: string };

/** A node's own credential under a cluster secret: hex(HMAC-SHA256(secret, "loom-node:" + nodeId)). */
export function nodeToken(clusterSecret: string, nodeId: string): string {
  return createHmac('sha256', clusterSecret).update(`loom-node:${nodeId}`).digest('hex');
}

export class ControlPlaneClient {
  private readonly timeoutMs: number;

  constructor(private readonly options: ControlPlaneClientOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.controlPlane.requestTimeoutMs;
  }

  private async call(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    if (this.options.nodeId) headers['x-loom-node'] = this.options.nodeId;
    return fetch(new URL(path, this.options.baseUrl), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
  }

  /** One call whose outcome the caller acts on (agent lifecycle); never throws. */
  async send(method: string, path: string, body?: unknown): Promise<ControlPlaneAnswer> {
    try {
      const res = await this.call(method, path, body);
      const text = await res.text();
      let parsed: unknown = undefined;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = text;
      }
      const error = (parsed as { error?: { message?: unknown } } | undefined)?.error;
      const message =
        typeof error?.message === 'string' ? error.message : res.ok ? 'ok' : `HTTP ${res.status} ${res.statusText}`;
      return { status: res.status, ok: res.ok, body: parsed, message };
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      const message =
        (err as Error).name === 'TimeoutError'
          ? `no answer within ${this.timeoutMs} ms`
          : `${(err as Error).message}${cause ? ` (${cause})` : ''}`;
      return { status: undefined, ok: false, body: undefined, message };
    }
  }

  /** Live holders of a blob, best first; [] when the control plane is down, slow or says no. */
  async locate(digest: string, query: { node?: string; zone?: string; limit?: number } = {}): Promise<PeerInfo[]> {
    const params = new URLSearchParams();
    if (query.node) params.set('node', query.node);
    if (query.zone) params.set('zone', query.zone);
    if (query.limit) params.set('limit', String(query.limit));
    try {
      const res = await this.call('GET', `/v1/blobs/${digest}/peers?${params}`);
      if (!res.ok) return [];
      return ((await res.json()) as { peers: PeerInfo[] }).peers;
    } catch {
      return [];
    }
  }

  /** Sends a heartbeat; returns the interval to beat at, or undefined when it failed. */
  async heartbeat(nodeId: string, body: HeartbeatBody): Promise<number | undefined> {
    const answer = await this.sendHeartbeat(nodeId, body);
    return answer.ok ? heartbeatInterval(answer) : undefined;
  }

  /** A heartbeat with its full outcome (the agent tells "refused" from "unreachable"). */
  sendHeartbeat(nodeId: string, body: HeartbeatBody): Promise<ControlPlaneAnswer> {
    return this.send('PUT', `/v1/nodes/${encodeURIComponent(nodeId)}`, body);
  }

  /** Removes the node and, with it, every replica it announced. */
  deregister(nodeId: string): Promise<ControlPlaneAnswer> {
    return this.send('DELETE', `/v1/nodes/${encodeURIComponent(nodeId)}`);
  }

  /** Announces (or updates) that `nodeId` holds `digest`, wholly or the listed pieces. */
  announce(digest: string, nodeId: string, replica: ReplicaAnnouncement): Promise<ControlPlaneAnswer> {
    const body = replica.complete ? { complete: true } : { complete: false, pieces: replica.pieces ?? [] };
    return this.send('PUT', `/v1/blobs/${digest}/replicas/${encodeURIComponent(nodeId)}`, body);
  }

  /** Withdraws a replica; a 404 (not recorded) means it is gone all the same. */
  withdraw(digest: string, nodeId: string): Promise<ControlPlaneAnswer> {
    return this.send('DELETE', `/v1/blobs/${digest}/replicas/${encodeURIComponent(nodeId)}`);
  }

  /** Publishes a blob's manifest (first writer wins: 409 for a different one). */
  putManifest(manifest: ManifestRecord): Promise<ControlPlaneAnswer> {
    const { digest, ...body } = manifest;
    return this.send('PUT', `/v1/blobs/${digest}`, body);
  }
}

/** The interval (seconds) a successful heartbeat answer asks for, if it says. */
export function heartbeatInterval(answer: ControlPlaneAnswer): number | undefined {
  const value = (answer.body as { heartbeatIntervalSeconds?: unknown } | undefined)?.heartbeatIntervalSeconds;
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : undefined;
}
