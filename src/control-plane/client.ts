// The control plane as nodes use it: heartbeats, announcements and locate. A control plane
// that does not answer within the timeout means "no peers": the fetch goes to the origin,
// so the control plane can never slow a download down.
export interface ControlPlaneClientOptions {
  baseUrl: string;
  token?: string;
  /** Per request. Default 2 s. */
  timeoutMs?: number;
}

export interface PeerInfo {
  id: string;
  url: string;
  zone: string | null;
  complete: boolean;
  pieces: number[] | null;
  freeUploadSlots: number;
}

export class ControlPlaneClient {
  private readonly timeoutMs: number;

  constructor(private readonly options: ControlPlaneClientOptions) {
    this.timeoutMs = options.timeoutMs ?? 2_000;
  }

  private async call(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    return fetch(new URL(path, this.options.baseUrl), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
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
  async heartbeat(
    nodeId: string,
    body: { url: string; zone?: string; freeUploadSlots?: number },
  ): Promise<number | undefined> {
    try {
      const res = await this.call('PUT', `/v1/nodes/${encodeURIComponent(nodeId)}`, body);
      if (!res.ok) return undefined;
      return ((await res.json()) as { heartbeatIntervalSeconds: number }).heartbeatIntervalSeconds;
    } catch {
      return undefined;
    }
  }
}
