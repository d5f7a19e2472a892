// The control-plane calls a fetching node makes for its swarm (swarm.ts), over
// ControlPlaneClient. A control plane that does not answer is "nobody knows": every read
// answers undefined and every write is skipped, so the fetch goes on from the origin. Why it
// could not be used is kept (`trouble`): a 401/403 is a misconfigured token, not an absent
// control plane, and the fetch says which.
import { manifestFingerprint, type Manifest } from '../core/manifest.js';
import { sourceBlobId } from '../cache/source-id.js';
import type { ControlPlaneAnswer, ControlPlaneClient } from '../control-plane/client.js';
import { isRefusal } from './node-identity.js';
import type { LeaseAnswer, PeerHolder, PieceRecord, SwarmControl, VerifiedAgainst } from './swarm.js';

const HEX64 = /^[0-9a-f]{64}$/;

/** Why the control plane could not be used: its status (none: no answer) and message. */
export interface ControlPlaneTrouble {
  status: number | undefined;
  message: string;
}

export class ClientSwarmControl implements SwarmControl {
  /** The first refusal (401/403) of a read or a lease, else the last answer that was unusable. */
  trouble: ControlPlaneTrouble | undefined;

  /** `nodeId`: this node, named as the reporter of bad peers (an open control plane needs it). */
  constructor(
    private readonly client: ControlPlaneClient,
    private readonly nodeId?: string,
  ) {}

  /** Keeps why `answer` cannot be used; a refusal is kept over any later trouble. */
  private troubled(answer: ControlPlaneAnswer, message = answer.message): void {
    if (this.trouble && isRefusal(this.trouble.status)) return;
    this.trouble = { status: answer.status, message };
  }

  async sourceDigest(key: string): Promise<string | undefined> {
    const answer = await this.client.send('GET', `/v1/sources?key=${encodeURIComponent(key)}`);
    if (isRefusal(answer.status)) this.troubled(answer);
    const digest = (answer.body as { digest?: unknown } | undefined)?.digest;
    return answer.ok && typeof digest === 'string' && HEX64.test(digest) ? digest : undefined;
  }

  async manifest(digest: string): Promise<Manifest | undefined> {
    const answer = await this.client.send('GET', `/v1/blobs/${digest}`);
    if (isRefusal(answer.status)) this.troubled(answer);
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
    // A refused token is no control plane for this node: without it, the 401 read as "no
    // holders" and the fetch went on to a lease it was refused as well.
    if (answer.status === undefined || answer.status >= 500 || isRefusal(answer.status)) {
      this.troubled(answer);
      return undefined;
    }
    if (!answer.ok) return [];
    // A 2xx without a holder list is not a control plane (a wrong URL: an agent, a web
    // server): treated as none, so the fetch goes on from the origin instead of waiting.
    const peers = (answer.body as { peers?: unknown } | undefined)?.peers;
    if (!Array.isArray(peers)) {
      this.troubled(answer, 'it answered without a holder list');
      return undefined;
    }
    return (peers as PeerHolder[]).map((p) => ({
      id: p.id,
      url: p.url,
      complete: p.complete,
      pieces: p.pieces,
    }));
  }

  async lease(id: string, node: string): Promise<LeaseAnswer | undefined> {
    const answer = await this.client.send('POST', `/v1/blobs/${id}/leases`, { node });
    if (!answer.ok) {
      this.troubled(answer);
      return undefined;
    }
    const body = answer.body as
      { granted?: boolean; token?: string; expiresAt?: number; ttlSeconds?: number; holders?: unknown } | undefined;
    // Not a lease answer: not a control plane (see holders()).
    if (typeof body?.granted !== 'boolean') {
      this.troubled(answer, 'it answered without a lease');
      return undefined;
    }
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
    lease: { id: string; token: string } | undefined,
  ): Promise<void> {
    await this.client.putManifest({ ...manifest, verifiedAgainst });
    // Only a node that fetched the blob from the origin under a lease maps the source, and
    // only under the lease on the source's id (the control plane refuses one on the digest:
    // any node can take that). A pinned fetch leads under the digest's lease: it maps the
    // source if it gets the source's lease too (nobody else fetches the URL from the origin).
    if (!this.nodeId || !lease) return;
    const sourceId = sourceBlobId(key);
    let token = lease.token;
    if (lease.id !== sourceId) {
      const own = await this.lease(sourceId, this.nodeId);
      if (!own?.granted) return;
      token = own.token;
    }
    try {
      // The piece list the mapping is checked against: what this node hashed under the lease
      // (a leader has published it piece by piece already; a pinned one under the digest).
      const { size, pieceSize, pieces } = manifest;
      await this.client.send('PUT', `/v1/sources/${sourceId}/pieces`, { lease: token, size, pieceSize, pieces });
      // 409: the source already maps to a digest (another node published first): not ours to change.
      await this.client.send('PUT', '/v1/sources', { key, digest: manifest.digest, lease: token });
    } finally {
      if (token !== lease.token) await this.releaseLease(sourceId, token);
    }
  }

  /**
   * Reports the fleet's manifest of `digest` as wrong: bytes matching every one of its pieces
   * hash to another digest. The control plane drops it once enough distinct nodes say so.
   */
  async reportManifest(manifest: Manifest, reason: string): Promise<void> {
    await this.sendReport(
      { digest: manifest.digest, kind: 'manifest', manifest: manifestFingerprint(manifest) },
      reason,
    );
  }

  async report(digest: string, node: string, reason: string): Promise<void> {
    await this.sendReport({ digest, node }, reason);
  }

  /** POSTs a report (either kind), its reason cut to 500 characters, naming this node as reporter. */
  private async sendReport(fields: Record<string, string>, reason: string): Promise<void> {
    const reporter = this.nodeId && { reporter: this.nodeId };
    await this.client.send('POST', '/v1/reports', { ...fields, reason: reason.slice(0, 500), ...reporter });
  }
}
