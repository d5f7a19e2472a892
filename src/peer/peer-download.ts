// Fetching with the fleet: the DownloadPlanner the node cache asks when `loom fetch` is
// given a control plane. It turns this node's role for the blob (swarm.ts) into the sources
// the engine downloads from, and checks and publishes what the node ends up holding.
import { hostname } from 'node:os';
import { DigestMismatchError, ForbiddenError, NoSourceError, UnauthorizedError } from '../core/errors.js';
import type { DownloadPlanner, PlannedDownload, VerifiedAgainst } from '../cache/download-planner.js';
import { sourceBlobId } from '../cache/source-id.js';
import { sourceKey } from '../cache/source-key.js';
import { ControlPlaneClient } from '../control-plane/client.js';
import type { SourceSlot } from '../fetch/download.js';
import { wholeFileBlame } from '../fetch/whole-file-blame.js';
import type { Source } from '../sources/source.js';
import { ORIGIN_SLOT_ID, Swarm, type SwarmPlan } from './swarm.js';
import { ClientSwarmControl, type ControlPlaneTrouble } from './swarm-control.js';
import {
  CONTROL_PLANE_EXAMPLE,
  checkHttpUrl,
  checkNodeId,
  checkZone,
  isRefusal,
  tokenRefusal,
} from './node-identity.js';
import { DEFAULTS } from '../core/defaults.js';
import { samePieces, type Manifest } from '../core/manifest.js';

export interface PeerFetchOptions {
  /** Base URL of the control plane. */
  controlPlane: string;
  /** Where controlPlane came from, as its messages name it (default: --control-plane). */
  controlPlaneFrom?: string;
  /** Bearer token for the control plane: this node's own, or the admin token. */
  token?: string;
  /** This node's id, as its agent registers it. Default: LOOM_NODE_ID, else the host name. */
  nodeId?: string;
  zone?: string;
  /** Token peers' agents ask for. Default: none. */
  agentToken?: string;
  /** False: peers only (`--no-origin`). Default true. */
  useOrigin?: boolean;
  /** Holders asked for at most. Default 8. */
  maxPeers?: number;
  /** Connections to one peer. Default 4. */
  connectionsPerPeer?: number;
  /** Requests in flight to the origin. Default 16. */
  originConnections?: number;
  /** A request to a peer that sends nothing this long is aborted. Default 5 s. */
  stallTimeoutMs?: number;
  /**
   * How long a node that cannot lead (`--no-origin`) waits for a first holder. A node that can
   * waits for as long as the lease holder keeps its lease. Default 15 s.
   */
  followerWaitMs?: number;
  /** A lease holder that received no byte for this long stops renewing its lease. Default 15 s. */
  leaseIdleMs?: number;
  /** How long a follower waits for the leader to publish the digest it checks against. Default 60 s. */
  publishWaitMs?: number;
  onStatus?: (message: string) => void;
  /**
   * Said once when the control plane cannot be used (a refused token, no answer) and the
   * fetch goes to the origin alone: a misconfiguration must be seen. Default: onStatus.
   */
  onWarning?: (message: string) => void;
}

/** Why a fetch with a control plane did without it (the --json `controlPlaneError`). */
export interface ControlPlaneProblem {
  code: string;
  /** The control plane's HTTP status; null when it did not answer. */
  status: number | null;
  message: string;
}

/**
 * How long a node taking pieces from peers waits for one able to serve a missing piece (the
 * lease holder fetching it), unless the swarm knows no source will come (Swarm.sourceWaitMs).
 */
const FOLLOWER_SOURCE_WAIT_MS = 60_000;

export function defaultNodeId(env: NodeJS.ProcessEnv = process.env): string {
  return env.LOOM_NODE_ID ?? hostname();
}

export class PeerPlanner implements DownloadPlanner {
  private readonly control: ClientSwarmControl;
  private readonly nodeId: string;
  /** Set when a plan went to the origin alone because the control plane could not be used. */
  problem: ControlPlaneProblem | undefined;

  constructor(private readonly options: PeerFetchOptions) {
    this.nodeId = checkNodeId(options.nodeId ?? defaultNodeId());
    checkZone(options.zone);
    const baseUrl = checkHttpUrl(
      options.controlPlane,
      options.controlPlaneFrom ?? '--control-plane',
      CONTROL_PLANE_EXAMPLE,
    );
    this.control = new ClientSwarmControl(
      new ControlPlaneClient({ baseUrl, token: options.token, nodeId: this.nodeId }),
      this.nodeId,
    );
  }

  knownDigest(url: string): Promise<string | undefined> {
    return this.control.sourceDigest(sourceKey(url)).catch(() => undefined);
  }

  async plan(args: {
    url: string;
    origin: Source;
    pinned: string | undefined;
    signal?: AbortSignal;
  }): Promise<PlannedDownload | undefined> {
    const { options } = this;
    const useOrigin = options.useOrigin ?? true;
    const key = sourceKey(args.url);
    const swarm = new Swarm(this.control, key, sourceBlobId(key), {
      nodeId: this.nodeId,
      zone: options.zone,
      agentToken: options.agentToken,
      maxPeers: options.maxPeers,
      connectionsPerPeer: options.connectionsPerPeer,
      useOrigin,
      // A peer is one source of many: one that goes quiet is left for another within seconds.
      stallTimeoutMs: options.stallTimeoutMs ?? DEFAULTS.peers.stallTimeoutMs,
      followerWaitMs: options.followerWaitMs,
      leaseIdleMs: options.leaseIdleMs,
      publishWaitMs: options.publishWaitMs,
      onStatus: options.onStatus,
    });
    let plan: SwarmPlan;
    try {
      plan = await swarm.prepare(args.pinned, args.signal);
    } catch (err) {
      await swarm.close();
      throw err;
    }
    const originSlot: SourceSlot = {
      id: ORIGIN_SLOT_ID,
      kind: 'origin',
      source: args.origin,
      maxConcurrency: options.originConnections ?? DEFAULTS.workers,
      preference: 1,
      // Only pieces no live peer holds: the fleet's origin egress stays near one copy.
      has: plan.role === 'leader' ? undefined : (piece) => swarm.originHas(piece),
    };
    if (plan.role === 'origin') {
      await swarm.close();
      const refused = this.refusal(this.control.trouble);
      if (refused && !useOrigin) throw refused.error(`${refused.reason} and --no-origin forbids the origin`);
      if (useOrigin) {
        // Said once, so a mistyped --control-plane or a missing token does not silently turn
        // every node's fetch into a whole origin download.
        const trouble = this.control.trouble;
        const message = refused
          ? `${refused.reason}: fetching from the origin alone, without peers; ${refused.hint}`
          : `the control plane did not answer as one: fetching from the origin alone, without peers${trouble ? ` (${trouble.message})` : ''}`;
        this.problem = {
          code: refused?.code ?? (trouble?.status === undefined ? 'LOOM_ERR_NETWORK' : 'LOOM_ERR_BAD_RESPONSE'),
          status: trouble?.status ?? null,
          message,
        };
        (options.onWarning ?? options.onStatus)?.(message);
      } else {
        throw new NoSourceError(`no peer holds ${args.url} and --no-origin forbids the origin`, {
          url: args.url,
          hint: 'fetch it on one node without --no-origin first, or check that its agent is running',
        });
      }
      return undefined;
    }
    const peers = swarm.peerSlots();
    // A follower has the origin among its sources from the start (serving only what its
    // has() allows: nothing until this node takes the lease over). Without it, a leader that
    // died with its agent leaves a follower whose first request (it learns the size from it)
    // can only go to the dead peer, and the download fails before the lease can lapse; with
    // it, that first request goes to the origin (at most 1 MiB).
    const sources = plan.role === 'leader' ? [originSlot] : useOrigin ? [...peers, originSlot] : peers;
    const verifiedAgainst: VerifiedAgainst = args.pinned ? 'sha256-pinned' : 'first-origin-fetch';
    // A known digest, a complete holder, no manifest (the blob was fetched without the fleet,
    // or an admin removed its manifest): no piece digest will ever be published to check
    // peers' pieces one by one, so the engine checks the whole file against the digest, and
    // the manifest this node then computes is published for the next ones. Its size, asked
    // of a holder, spares the first request to the origin (a wrong one fails the download,
    // which then goes to the origin alone).
    const wholeOnly = plan.role === 'swarm' && !plan.manifest;
    const size = plan.size ?? (wholeOnly ? await sizeFromHolders(peers) : undefined);
    options.onStatus?.(describe(plan.role, peers.length, wholeOnly));
    const publishWaitMs = options.publishWaitMs ?? DEFAULTS.peers.publishWaitMs;
    // The digest a follower's bytes must have (its own, `own`, once it holds the lease). None
    // published in time is not a bad byte found, only nothing to check against (the control
    // plane went away, the leader never published): the fetch is planned again.
    const trustedDigest = async (own: string): Promise<string> => {
      const trusted = await swarm.trustedDigest(publishWaitMs, own);
      if (trusted !== undefined) return trusted;
      throw new NoSourceError(
        `no node published the digest of ${args.url} to check the bytes taken from peers against: nothing was kept`,
        { url: args.url, hint: 'rerun: the fetch then takes it from the origin or checks every piece' },
      );
    };
    // Once per fetch: the engine's whole-file check and the origin's copy may both refute it.
    let manifestReported = false;
    const reportManifest = async (said: string, reason: string): Promise<void> => {
      const manifest = plan.manifest!;
      if (manifestReported) return;
      manifestReported = true;
      options.onStatus?.(
        `the fleet's manifest of ${manifest.digest} lists the pieces of other bytes (${said}): reported to the control plane`,
      );
      await this.control.reportManifest(manifest, reason);
    };
    return {
      id: plan.id,
      // A manifest's digest is "pinned" for the engine (the whole file is checked against it)
      // when it is the user's or the URL's mapping: the manifest is first-writer-wins and, once
      // nodes' reports drop one, its successor may come from any node that reported it, not
      // from the node that mapped the URL: its pieces then say nothing of the mapped digest.
      expected: {
        sha256: plan.digest,
        size,
        manifest: plan.manifest,
        pinned: args.pinned !== undefined || plan.manifest !== undefined,
      },
      sources,
      sourceWaitMs: plan.role === 'leader' ? 0 : () => swarm.sourceWaitMs(FOLLOWER_SOURCE_WAIT_MS),
      replanOnFailure: plan.role === 'follower',
      discardOnFailure: plan.role === 'follower' || wholeOnly,
      // Never with --no-origin: then a failure is the fetch's. A digest with a manifest, pinned
      // or mapped, is checked on the whole file too: a manifest forged for it fails the
      // download, and the origin's bytes are then had alone.
      originOnFailure: (wholeOnly || plan.manifest !== undefined) && useOrigin,
      verifiedAgainst,
      started: (handle) =>
        swarm.start((slot) => handle.addSource(slot), useOrigin ? originSlot : undefined, sources.includes(originSlot)),
      pieceVerified: (index, digest, layout) => swarm.pieceVerified(index, digest, layout),
      progress: (bytes) => swarm.progress(bytes),
      dropped: (id, reason) => swarm.dropped(id, reason),
      // A follower checks each piece a peer sent against the digest the lease holder published
      // (a lease holder takes from peers only pieces with a published digest: a follower that
      // took the lease over, a leader resuming its partial; see Swarm.peerMayServe).
      pieceDigest: plan.manifest || wholeOnly ? undefined : (index, layout) => swarm.expectedPiece(index, layout),
      // A follower whose every piece is in the manifest its leader published for the digest it
      // published is that digest, as a node that had the manifest from the start trusts it to
      // be: it hashes its pieces only, not the whole file too (README, "Trust").
      digestFromPieces:
        plan.role === 'follower' && !plan.manifest && !args.pinned
          ? (pieces, layout) => swarm.digestFromPieces(pieces, layout, () => trustedDigest(''))
          : undefined,
      finished: async (result) => {
        const digest = result.sha256!;
        // When digestFromPieces found every piece in the leader's manifest, the digest is the
        // leader's and its checks are done: nothing is asked again.
        if (plan.role === 'follower' && !plan.manifest && !swarm.vouchedFor(digest)) {
          // Its pieces were checked one by one against the digests the lease holder published
          // as it hashed them; the whole file is too, against the digest the leader (the first
          // node to fetch it from the origin) publishes, and so is the leader's manifest.
          const trusted = await trustedDigest(digest);
          if (trusted !== digest) {
            const blame = wholeFileBlame(
              Object.entries(result.bytesBySource).map(([id, bytes]) => ({ id, peer: id !== ORIGIN_SLOT_ID, bytes })),
              // A follower checked every piece, the origin's too, against the lease holder's digests.
              { resumedBytes: result.stats.resumedBytes, piecesChecked: true },
            );
            const error = new DigestMismatchError(
              `the bytes taken from peers hash to ${digest}, the fleet's record says ${trusted}: ${blame.said}; nothing was kept`,
              { url: args.url, expected: trusted, actual: digest, hint: 'rerun: the fetch then checks every piece' },
            );
            if (blame.culprit !== undefined) swarm.dropped(blame.culprit, error);
            throw error;
          }
          const disagreement = await swarm.disagreement(trusted);
          if (disagreement) {
            throw new DigestMismatchError(
              `the fleet's manifest of ${trusted} disagrees with the piece digests its lease holder published: ${disagreement}; nothing was kept`,
              { url: args.url, hint: 'an admin removes the bad manifest (DELETE /v1/blobs/<digest>), then rerun' },
            );
          }
        }
        if (result.manifest) await swarm.finished(result.manifest, verifiedAgainst);
      },
      // The pinned digest's manifest was proved wrong here: reported, so that once enough
      // nodes have, the control plane drops it and the next fetches do not pay for it.
      manifestRefuted: (actual) =>
        reportManifest(
          `they hash to ${actual}`,
          `every piece matched the manifest, the whole file hashes to ${actual}, not ${plan.manifest!.digest}`,
        ),
      // The origin's bytes, checked against the pin: their manifest in place of the refuted
      // one (a 409 while that one is still held). No source mapping: that needs a lease.
      originVerified: async (manifest) => {
        // A fleet manifest no pieces ever matched (its forger serves nothing, or the bytes
        // came from honest holders and the origin) is proved wrong here too: the pinned bytes
        // have other pieces. Unreported, it stayed for good, and every pinned fetch paid for it.
        const fleet = plan.manifest;
        if (fleet && refutedBy(fleet, manifest)) {
          await reportManifest(
            "the origin's bytes, which match the pin, have other pieces",
            `the origin's bytes match the pinned ${manifest.digest} and have other pieces than the manifest`,
          ).catch(() => undefined);
        }
        // The very pieces of the fleet's manifest: peers' pieces were checked against the pin's
        // manifest, so the ones that failed it served bad bytes (whatever failed the download).
        if (fleet && samePieces(fleet, manifest)) await swarm.manifestConfirmed();
        await this.control.publish(key, manifest, verifiedAgainst, undefined).catch(() => undefined);
      },
      close: () => swarm.close(),
    };
  }

  /** A refused token, as a message with what to do; undefined for any other trouble. */
  private refusal(
    trouble: ControlPlaneTrouble | undefined,
  ): { code: string; reason: string; hint: string; error: (message: string) => Error } | undefined {
    if (!trouble || !isRefusal(trouble.status)) return undefined;
    const refusal = tokenRefusal(trouble.status!, trouble.message, this.nodeId, this.options.token !== undefined);
    const ErrorClass = trouble.status === 403 ? ForbiddenError : UnauthorizedError;
    return {
      ...refusal,
      error: (message) => new ErrorClass(message, { status: trouble.status, hint: refusal.hint }),
    };
  }
}

/**
 * The blob's size as its holders' agents give it (the Content-Range total of a one-byte
 * range, through each holder's own PeerSource), asked of all at once under one timeout: the
 * first answer wins; undefined when none answers, and the engine learns it from its first
 * request.
 */
async function sizeFromHolders(peers: SourceSlot[]): Promise<number | undefined> {
  const signal = AbortSignal.timeout(DEFAULTS.controlPlane.requestTimeoutMs);
  const ask = async (peer: SourceSlot): Promise<number> => {
    const probe = await peer.source.probe([0, 1], signal);
    probe.body.stream.destroy();
    if (probe.size === undefined) throw new Error('no size');
    return probe.size;
  };
  try {
    return await Promise.any(peers.map(ask));
  } catch {
    return undefined;
  }
}

function describe(role: string, peers: number, wholeOnly: boolean): string {
  if (wholeOnly)
    return `the fleet has no manifest for it: taking it from ${peers} peer${peers === 1 ? '' : 's'} (the origin only for what no peer holds), the whole file checked against its digest`;
  switch (role) {
    case 'leader':
      return 'no node holds it yet: fetching from the origin for the fleet (pieces are served to peers as they land)';
    case 'follower':
      return `another node is fetching it from the origin: taking its pieces from ${peers} peer${peers === 1 ? '' : 's'}`;
    default:
      return `fetching from ${peers} peer${peers === 1 ? '' : 's'}, the origin only for pieces no peer holds`;
  }
}

/**
 * Whether the manifest of bytes that matched the pin proves the fleet's manifest of that
 * digest wrong: another size, or other pieces at the same piece size (at another piece size
 * the two lists cannot be compared).
 */
function refutedBy(fleet: Manifest, pinned: Manifest): boolean {
  if (fleet.size !== pinned.size) return true;
  return fleet.pieceSize === pinned.pieceSize && !samePieces(fleet, pinned);
}
