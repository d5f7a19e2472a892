// The control plane as nodes use it: heartbeats, announcements, and send() for the rest (a
// fetching node's swarm reads through it, swarm-control.ts). A control plane that does not
// answer within the timeout means "no peers": the fetch goes to the origin, so the control
// plane can never slow a download down.
//
// Over node:http(s) with a keep-alive agent, not the global fetch: a fetching node in a fleet
// cold start asks the control plane several times a second (bitmaps, announces, digests),
// and undici's fetch (WHATWG streams, a Request and a Response per call) cost ~4x the CPU
// per call of node:http here, besides compiling undici in every `loom fetch` process.
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import { DEFAULTS } from '../core/defaults.js';

/** An answer, read whole. */
interface Reply {
  status: number;
  ok: boolean;
  statusText: string;
  text: string;
}

/** node:https, loaded only for an https:// control plane (TLS costs start-up time). */
function httpsModule(): typeof import('node:https') {
  return createRequire(import.meta.url)('node:https') as typeof import('node:https');
}

export interface ControlPlaneClientOptions {
  baseUrl: string;
  /** Bearer token: the shared admin token, or this node's own (see nodeToken). */
  token?: string;
  /** Per request. Default 2 s. */
  timeoutMs?: number;
  /** The node this client speaks for, sent as X-Loom-Node (needed with per-node tokens). */
  nodeId?: string;
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
  /** Keep-alive connections to the control plane (idle ones never hold the process open). */
  private agent: http.Agent | undefined;

  constructor(private readonly options: ControlPlaneClientOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.controlPlane.requestTimeoutMs;
  }

  /**
   * One request and its whole answer; rejects when there is none within the timeout. A
   * kept-alive connection the control plane closed while idle fails before any answer: the
   * request is sent once more on a new one (it was never read), as the raw data client does.
   */
  private call(method: string, path: string, body?: unknown, again = true): Promise<Reply> {
    const url = new URL(path, this.options.baseUrl);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {};
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    if (this.options.nodeId) headers['x-loom-node'] = this.options.nodeId;
    const client = url.protocol === 'https:' ? httpsModule() : http;
    const agent = (this.agent ??= new client.Agent({ keepAlive: true }));
    return new Promise<Reply>((resolve, reject) => {
      let answered = false;
      const req = client.request(url, { method, headers, agent }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          const status = res.statusCode ?? 0;
          resolve({
            status,
            ok: status >= 200 && status < 300,
            statusText: res.statusMessage ?? '',
            text: Buffer.concat(chunks).toString('utf8'),
          });
        });
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) fail(new Error('the control plane closed the connection mid-answer'));
        });
      });
      const fail = (err: Error): void => {
        clearTimeout(timer);
        const code = (err as { code?: string }).code;
        if (again && req.reusedSocket && !answered && (code === 'ECONNRESET' || code === 'EPIPE')) {
          resolve(this.call(method, path, body, false));
        } else {
          reject(err);
        }
      };
      const timer = setTimeout(() => {
        req.destroy(Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), { name: 'TimeoutError' }));
      }, this.timeoutMs);
      // Like AbortSignal.timeout: a pending answer is waited for by its socket, not by this timer.
      timer.unref();
      req.on('error', fail);
      req.end(payload);
    });
  }

  /** One call whose outcome the caller acts on (agent lifecycle); never throws. */
  async send(method: string, path: string, body?: unknown): Promise<ControlPlaneAnswer> {
    try {
      const res = await this.call(method, path, body);
      const { text } = res;
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
