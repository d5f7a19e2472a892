// The control-plane calls a fetching node makes for its swarm (swarm.ts), over
// ControlPlaneClient. A control plane that does not answer is "nobody knows": every read
// answers undefined and every write is skipped, so the fetch goes on from the origin.
import type { Manifest } from '../core/manifest.js';
import type { ControlPlaneClient } from '../control-plane/client.js';
import type { LeaseAnswer, PeerHolder, PieceRecord, SwarmControl, VerifiedAgainst } from './swarm.js';

const HEX64 = /^[0-9a-f]{64}$/;

export class ClientSwarmControl implements SwarmControl {
  /** `nodeId`: this node, named as the reporter of bad peers (an open control plane needs it). */
  constructor(
    private readonly client: ControlPlaneClient,
    private readonly nodeId?: string,
  ) {}

  async sourceDigest(key: string): Promise<string | undefined> {
    const answer = await this.client.send('GET', `/v1/sources?key=${encodeURIComponent(key)}`);
    const digest = (answer.body as { digest?: unknown } | undefined)?.digest;
    return answer.ok && typeof digest === 'string' && HEX64.test(digest) ? digest : undefined;
  }

  async manifest(digest: string): Promise<Manifest | undefined> {
    const answer = await this.client.send('GET', `/v1/blobs/${digest}`);
    if (!answer.ok) return undefined;
    const body = answer.body as Partial<Manifest> | undefined;
    if (!body || !Array.isArray(body.pieces) || typeof body.size !== 'number' || typeof body.pieceSize !== 'number')
      return undefined;
    return { digest, size: body.size, pieceSize: body.pieceSize, pieces: body.pieces };
  }

  async holders(id: string, query: { node: string; zone?: string; limit: number }): Promise<PeerHolder[] | undefined> {
    const params = new URLSearchParams({ node: query.node, limit: String(query.limit) });
    if (query.zone) params.set('zone', query.zone);
    const answer = await this.client.send('GET', `/v1/blobs/${id}/peers?${params}`);
    if (answer.status === undefined || answer.status >= 500) return undefined;
    if (!answer.ok) return [];
    // A 2xx without a holder list is not a control plane (a wrong URL: an agent, a web
    // server): treated as none, so the fetch goes on from the origin instead of waiting.
    const peers = (answer.body as { peers?: unknown } | undefined)?.peers;
    if (!Array.isArray(peers)) return undefined;
    return (peers as PeerHolder[]).map((p) => ({
      id: p.id,
      url: p.url,
      complete: p.complete,
      pieces: p.pieces,
    }));
  }

  async lease(id: string, node: string): Promise<LeaseAnswer | undefined> {
    const answer = await this.client.send('POST', `/v1/blobs/${id}/leases`, { node });
    if (!answer.ok) return undefined;
    const body = answer.body as
      { granted?: boolean; token?: string; expiresAt?: number; ttlSeconds?: number; holders?: unknown } | undefined;
    // Not a lease answer: not a control plane (see holders()).
    if (typeof body?.granted !== 'boolean') return undefined;
    if (body.granted === true && typeof body.token === 'string') {
      const ttlMs = typeof body.ttlSeconds === 'number' && body.ttlSeconds > 0 ? body.ttlSeconds * 1000 : 5_000;
      return { granted: true, token: body.token, expiresAt: body.expiresAt ?? 0, ttlMs };
    }
    // Who holds it: a node waiting on the holder stops once that node's agent is dropped.
    const holders = Array.isArray(body.holders)
      ? body.holders.flatMap((h: unknown) =>
          typeof (h as { node?: unknown } | null)?.node === 'string' ? [(h as { node: string }).node] : [],
        )
      : undefined;
    return { granted: false, holders };
  }

  /** False only when the control plane says the lease is gone; an unanswered renewal may have held. */
  async renewLease(id: string, token: string): Promise<boolean> {
    const answer = await this.client.send('PUT', `/v1/blobs/${id}/leases/${token}`);
    return answer.ok || answer.status !== 404;
  }

  async releaseLease(id: string, token: string): Promise<void> {
    await this.client.send('DELETE', `/v1/blobs/${id}/leases/${token}`);
  }

  async announce(id: string, node: string, replica: { complete: boolean; pieces?: number[] }): Promise<void> {
    await this.client.announce(id, node, replica);
  }

  async putPieces(
    id: string,
    lease: string,
    record: { size: number; pieceSize: number; pieces: string[] },
  ): Promise<void> {
    // 403/409: the lease lapsed or was taken over; the new holder publishes its own.
    await this.client.send('PUT', `/v1/sources/${id}/pieces`, { lease, ...record });
  }

  async pieces(id: string): Promise<PieceRecord | undefined> {
    const answer = await this.client.send('GET', `/v1/sources/${id}/pieces`);
    // No answer is not "none published": the caller waits only so long for one.
    if (answer.status === undefined || answer.status >= 500) throw new Error(answer.message);
    if (!answer.ok) return undefined;
    const body = answer.body as Partial<PieceRecord> | undefined;
    if (
      !body ||
      typeof body.size !== 'number' ||
      typeof body.pieceSize !== 'number' ||
      !Array.isArray(body.pieces) ||
      !body.pieces.every((p) => typeof p === 'string' && HEX64.test(p))
    )
      return undefined;
    return { size: body.size, pieceSize: body.pieceSize, pieces: body.pieces };
  }

  async publish(
    key: string,
    manifest: Manifest,
    verifiedAgainst: VerifiedAgainst,
    lease: string | undefined,
  ): Promise<void> {
    await this.client.putManifest({ ...manifest, verifiedAgainst });
    // 409: the source already maps to a digest (another node published first); 403: this node
    // holds no lease (it took the blob from peers); neither is ours to change.
    await this.client.send('PUT', '/v1/sources', { key, digest: manifest.digest, ...(lease && { lease }) });
  }

  async report(digest: string, node: string, reason: string): Promise<void> {
    const reporter = this.nodeId && { reporter: this.nodeId };
    await this.client.send('POST', '/v1/reports', {
      digest,
      node,
      reason: reason.slice(0, 500),
      ...reporter,
    });
  }
}
