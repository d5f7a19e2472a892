// How one node takes part in fetching one blob with its fleet: decides its role, builds the
// sources the engine downloads from, keeps them current while the download runs, and tells
// the control plane what this node holds.
//
// Roles:
// - swarm: the digest and its trusted manifest are known and some node holds pieces: take
//   pieces from peers (verified one by one against the manifest), the origin only for pieces
//   no live peer holds. A known digest with no manifest but a complete holder is a swarm too,
//   its whole file checked against the digest at the end (peer-download.ts).
// - leader: nobody holds it yet and this node won the blob's lease: fetch from the origin,
//   publish each piece as it is hashed (others take it from this node's agent), and at the
//   end publish the source -> digest mapping and the manifest (the first node to fetch from
//   the origin is the trust anchor when the source vouches for no digest).
// - follower: another live node holds the lease: take its pieces as they land. There is no
//   manifest yet, but the leader publishes each piece's sha256 under the source id as it
//   hashes it (before it announces the piece): a piece a peer sent counts only once it
//   matches that digest (asked for again only when a piece needs one this node lacks; the
//   piece waits meanwhile, neither hashed into the whole-file digest nor served). A peer
//   whose piece does not match is dropped and reported, and the piece refetched. At the end
//   every piece digest must be in the manifest the leader published for the digest it
//   published (then the blob is that digest, as a swarm node trusts the manifest, and the
//   whole file is not hashed too); failing that (or pinned), the whole file is checked
//   against the digest the leader publishes (or the pinned one) and the leader's manifest
//   against the digests the pieces were checked with. When the
//   leader's lease lapses, a follower takes it and becomes the leader: pieces from the
//   origin need no digest, and it publishes its own.
// - origin: no control plane, or it does not answer: today's fetch.
import { setTimeout as sleep } from 'node:timers/promises';
import { cancelled, DigestMismatchError, NoSourceError, type LoomError } from '../core/errors.js';
import { sameManifest, type Manifest } from '../core/manifest.js';
import type { Source } from '../sources/source.js';
import { PeerSource } from './peer-source.js';
import { DEFAULTS } from '../core/defaults.js';

/** A holder of a blob, as locate answers. */
export interface PeerHolder {
  id: string;
  url: string;
  complete: boolean;
  /** Verified pieces of a partial holder. */
  pieces: number[] | null;
}

export type LeaseAnswer =
  | { granted: true; token: string; expiresAt: number; ttlMs: number }
  /** `holders`: the nodes that hold it, when the control plane says. */
  | { granted: false; holders?: string[] };

/** What the swarm needs from the control plane (ControlPlaneClient implements it). */
export interface SwarmControl {
  sourceDigest(key: string): Promise<string | undefined>;
  manifest(digest: string): Promise<Manifest | undefined>;
  holders(id: string, query: { node: string; zone?: string; limit: number }): Promise<PeerHolder[] | undefined>;
  lease(id: string, node: string): Promise<LeaseAnswer | undefined>;
  renewLease(id: string, token: string): Promise<boolean>;
  releaseLease(id: string, token: string): Promise<void>;
  announce(id: string, node: string, replica: { complete: boolean; pieces?: number[] }): Promise<void>;
  /**
   * Publishes the digests of the pieces hashed so far (a prefix) under the source id `id`,
   * as the holder of lease `lease` on it.
   */
  putPieces(id: string, lease: string, record: { size: number; pieceSize: number; pieces: string[] }): Promise<void>;
  /** The piece digests the lease holder published under `id` so far (a prefix), if any; throws without an answer. */
  pieces(id: string): Promise<PieceRecord | undefined>;
  /**
   * Publishes the manifest and, for a node that fetched it from the origin under `lease` (on
   * blob `lease.id`), maps the source to its digest.
   */
  publish(
    key: string,
    manifest: Manifest,
    verifiedAgainst: VerifiedAgainst,
    lease: { id: string; token: string } | undefined,
  ): Promise<void>;
  report(digest: string, node: string, reason: string): Promise<void>;
}

/** Piece digests published under a source id: pieces 0..n-1 of a blob of `size` bytes. */
export interface PieceRecord {
  size: number;
  pieceSize: number;
  pieces: string[];
}

export type VerifiedAgainst = 'sha256-pinned' | 'hub-sha256' | 's3-checksum' | 'first-origin-fetch';

/** One place bytes can come from, as the engine schedules it. */
export interface SwarmSlot {
  id: string;
  kind: 'origin' | 'peer';
  source: Source;
  maxConcurrency: number;
  preference: number;
  has?(piece: number): boolean;
}

export interface SwarmOptions {
  nodeId: string;
  zone?: string;
  /** Bearer token peers' agents ask for. */
  agentToken?: string;
  /** Holders asked for at most. Default 8. */
  maxPeers?: number;
  /** Connections to one peer at most. Default 4. */
  connectionsPerPeer?: number;
  /** False: never the origin (`--no-origin`). */
  useOrigin: boolean;
  stallTimeoutMs: number;
  /** How often holders are asked again while downloading. Default 250 ms. */
  refreshMs?: number;
  /** How long a node that cannot lead (`--no-origin`) waits for a first holder. Default 15 s. */
  followerWaitMs?: number;
  /** A lease holder that received no byte for this long stops renewing its lease. Default 15 s. */
  leaseIdleMs?: number;
  /**
   * How long a piece waits for the control plane to answer with its published digest when
   * it does not answer at all (a slow leader is waited for as long as it holds its lease).
   * Default 60 s.
   */
  publishWaitMs?: number;
  onStatus?: (message: string) => void;
}

export type SwarmRole = 'swarm' | 'leader' | 'follower' | 'origin';

/** How often a downloading node tells the control plane its verified pieces, at most. */
const ANNOUNCE_MS = 100;
/** Every how many refreshes a follower tries the lease and asks for the published digest. */
const SLOW_EVERY = 4;
/**
 * Pieces to take from known peers above which holders are asked only every SLOW_EVERY
 * refreshes: twice what a peer's connections (4) have in flight at once.
 */
const BACKLOG_PIECES = 8;

interface TrackedPeer {
  holder: PeerHolder;
  source: PeerSource;
  pieces: Set<number>;
}

/** The origin's slot id in a download (peer-download.ts): no peer's slot may take it. */
export const ORIGIN_SLOT_ID = 'origin';

/**
 * A peer's slot id: its node id, except for a node named like the origin's slot (a host
 * called 'origin': the default node id is the host name), whose slot would otherwise clash
 * with the origin's (the engine refuses two sources of one id, and judges a piece by the
 * kind of the slots that wrote it). Node ids hold no '/', so this one names no other node.
 */
function peerSlotId(nodeId: string): string {
  return nodeId === ORIGIN_SLOT_ID ? `${nodeId}/peer` : nodeId;
}

/** Whether a peer can serve piece `piece` now, as far as this node knows. */
function holds(peer: TrackedPeer, piece: number): boolean {
  return peer.holder.complete || peer.source.complete || peer.pieces.has(piece);
}

function holdsSomething(holder: PeerHolder): boolean {
  return holder.complete || (holder.pieces?.length ?? 0) > 0;
}

export interface SwarmPlan {
  role: SwarmRole;
  /** Name of the blob among peers: its digest, or the source id while it has none. */
  id: string;
  /** The trusted digest, when known before the download. */
  digest: string | undefined;
  manifest: Manifest | undefined;
  size: number | undefined;
}

export class Swarm {
  private readonly peers = new Map<string, TrackedPeer>();
  /** Nodes that served bad bytes: never asked again in this download. */
  private readonly excluded = new Set<string>();
  /** Slots the engine dropped (their node may still serve under another name). */
  private readonly droppedSlots = new Set<string>();
  /**
   * Reports held back while a download checks pieces against a manifest its digest (a pin,
   * or the URL's mapping) has not vouched for yet: a forged one fails every honest holder's
   * pieces. Sent once the whole file matched the digest (finished), or once the origin's
   * copy, fetched alone after a failure, matched it with the manifest's pieces
   * (manifestConfirmed); forgotten otherwise (the manifest lied, or nothing proved it).
   */
  private readonly heldReports: Array<[blob: string, node: string, reason: string]> = [];
  /** The origin's piece failed the digest's manifest (see dropped). */
  private originRefuted = false;
  private lease: { token: string } | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshes = 0;
  private addSlot: ((slot: SwarmSlot) => void) | undefined;
  /** The origin's slot, added to the download when a follower takes over the lease. */
  private originSlot: SwarmSlot | undefined;
  private originAdded = false;
  /** The digest the leader published for the source, once it has (a follower's check). */
  private published: string | undefined;
  private originAllowed: boolean;
  private announcing: Promise<void> = Promise.resolve();
  private lastAnnounceAt = 0;
  /** Piece digests the lease holder published (a follower checks peers' pieces against them). */
  private readonly leaderDigests: string[] = [];
  /** The question for them now, and when the last one was asked (asked again only so often). */
  private askingPieces: Promise<void> | undefined;
  private lastPiecesAt = 0;
  /** When the control plane last answered a question for piece digests. */
  private piecesAnsweredAt = Date.now();
  /** The digest each piece a peer sent was checked against: the final manifest must agree. */
  private readonly checked = new Map<number, string>();
  /** Pieces no published digest will come for (this node leads now): the origin serves them. */
  private readonly originOnly = new Set<number>();
  /** When a node that may not lead last looked whether the lease is free (holderGone). */
  private lastLeaseLookAt = 0;
  /** Since when it has found the lease free at every look (undefined: held at the last one). */
  private leaseFreeSince: number | undefined;
  private closed = false;
  /**
   * The lease holder's agent was dropped here while it still holds the lease (its fetch runs
   * on; its agent is dead, refuses, or sent bad bytes): what it fetches never reaches this
   * node, so waiting for it is pointless. The origin serves what no live peer holds, or,
   * under --no-origin, the download fails as soon as nothing can serve the rest.
   */
  private holderLost = false;
  /** The question for the lease's holders after a drop, and whether a drop came meanwhile. */
  private lookingAtHolder: Promise<void> | undefined;
  private lookAgain = false;
  /** The announce of pieces verified since the last one, due at most ANNOUNCE_MS after it. */
  private announceTimer: NodeJS.Timeout | undefined;
  /** A question to the control plane for the published digest, shared while it is asked. */
  private asking: Promise<string | undefined> | undefined;
  private verified = new Set<number>();
  /** Piece digests this node hashed (no manifest known): a leader publishes them as they come. */
  private readonly pieceDigests = new Map<number, string>();
  private layout: { size: number; pieceSize: number } | undefined;
  /** How many piece digests (a prefix) were last published. */
  private publishedPieces = 0;
  /** Body bytes received so far and when they last grew (a lease is renewed only while they do). */
  private transferred = 0;
  private lastProgressAt = Date.now();
  private idleSaid = false;
  private lostSaid = false;
  private renewTimer: NodeJS.Timeout | undefined;
  /**
   * The leader's digest, once digestFromPieces found this node's pieces in its manifest: the
   * blob is that digest, and the end of the download asks the control plane nothing more.
   */
  private vouched: string | undefined;
  /** Reports of bad peers in flight: close() waits for them, so none is lost at exit. */
  private reporting: Promise<void> = Promise.resolve();
  plan: SwarmPlan;

  constructor(
    private readonly control: SwarmControl,
    private readonly key: string,
    private readonly sourceId: string,
    private readonly options: SwarmOptions,
  ) {
    this.plan = { role: 'origin', id: sourceId, digest: undefined, manifest: undefined, size: undefined };
    this.originAllowed = options.useOrigin;
  }

  private status(message: string): void {
    this.options.onStatus?.(message);
  }

  /**
   * Decides this node's role; `pinned` is a digest the user or the source vouched for.
   * `signal` (Ctrl-C) ends a wait for another node's first piece with a cancellation.
   */
  async prepare(pinned: string | undefined, signal?: AbortSignal): Promise<SwarmPlan> {
    let digest = pinned ?? (await this.control.sourceDigest(this.key));
    let manifest = digest ? await this.control.manifest(digest) : undefined;
    this.plan = { role: 'origin', id: digest ?? this.sourceId, digest, manifest, size: manifest?.size };
    const deadline = Date.now() + (this.options.followerWaitMs ?? DEFAULTS.peers.followerWaitMs);
    for (let first = true; ; first = false) {
      if (!first && !manifest) {
        // The node that held the lease may have finished and published meanwhile.
        const published = digest ?? (await this.control.sourceDigest(this.key));
        const manifestNow = published ? await this.control.manifest(published) : undefined;
        if (published && manifestNow) {
          digest = published;
          manifest = manifestNow;
          this.plan = { role: 'origin', id: published, digest, manifest, size: manifest.size };
        }
      }
      const id = this.plan.id;
      const holders = await this.control.holders(id, this.locateQuery());
      if (holders === undefined) return this.plan; // no control plane: today's fetch
      if (holders.some(holdsSomething)) {
        // Pieces checked one by one against the manifest (swarm), or the whole file at the
        // end against the digest the leader publishes (follower). A known digest whose blob
        // a node holds complete, with no manifest (fetched without the fleet, an admin
        // DELETE), has no leader to publish piece digests: waiting for them hung forever.
        // Its holders serve it as a swarm, the whole file checked against the digest.
        this.plan.role = manifest || (digest && holders.some((h) => h.complete)) ? 'swarm' : 'follower';
        if (!manifest) {
          // The lease holder publishes the blob's size with its piece digests: known here, it
          // is checked on every peer's answer, the first one too (a --no-origin follower asks
          // a peer first), instead of taken from whichever peer answers first.
          const record = await this.control.pieces(id).catch(() => undefined);
          if (record) this.plan.size = record.size;
        }
        this.track(holders, this.plan.size);
        // Only partial holders: one of them is fetching it from the origin under the lease;
        // this node uses the origin only if it takes the lease over (its holder died).
        if (!holders.some((h) => h.complete)) this.originAllowed = false;
        return this.plan;
      }
      // Nobody holds any of it: one node (the lease holder) fetches it from the origin.
      if (this.options.useOrigin) {
        const lease = await this.control.lease(id, this.options.nodeId);
        if (lease === undefined) return this.plan; // the control plane stopped answering
        if (lease.granted) {
          this.holdLease(lease);
          this.plan.role = 'leader';
          return this.plan;
        }
        // Another node holds the lease: it is alive and receiving bytes (a holder renews only
        // while it does), so this node waits for its first piece however long that takes on
        // a loaded machine or a slow origin. Giving up after a fixed time sent every follower
        // to the origin as well: N copies. A holder that dies or stalls stops renewing, and
        // this loop then gets the lease and leads.
      } else if (Date.now() > deadline) {
        // Peers only: nothing to take over; wait only so long for a first holder.
        return this.plan;
      }
      await sleep(200, undefined, { signal }).catch(() => {
        throw cancelled();
      });
    }
  }

  private locateQuery(): { node: string; zone?: string; limit: number } {
    return {
      node: this.options.nodeId,
      zone: this.options.zone,
      limit: this.options.maxPeers ?? DEFAULTS.peers.maxPeers,
    };
  }

  /** Whether the origin may serve piece i now: only pieces no live peer holds. */
  originHas(piece: number): boolean {
    if (!this.originAllowed) return false;
    if (!this.peerMayServe(piece)) return true;
    for (const [slotId, peer] of this.peers) {
      if (this.droppedSlots.has(slotId) || this.excluded.has(peer.holder.id)) continue;
      if (holds(peer, piece)) return false;
    }
    return true;
  }

  /**
   * Whether the live peers known hold at least BACKLOG_PIECES pieces this node has not
   * verified yet (a complete one holds them all): work enough until the next slow refresh.
   */
  private backlogged(): boolean {
    const waiting = new Set<number>();
    for (const [slotId, peer] of this.peers) {
      if (this.droppedSlots.has(slotId) || this.excluded.has(peer.holder.id)) continue;
      if (peer.holder.complete || peer.source.complete) return true;
      for (const piece of peer.pieces) if (!this.verified.has(piece)) waiting.add(piece);
      if (waiting.size >= BACKLOG_PIECES) return true;
    }
    return false;
  }

  /** The peer sources known now, for the engine. */
  peerSlots(): SwarmSlot[] {
    return [...this.peers.keys()].map((id) => this.slotFor(id));
  }

  private slotFor(id: string): SwarmSlot {
    const peer = this.peers.get(id)!;
    return {
      id,
      kind: 'peer',
      source: peer.source,
      maxConcurrency: this.options.connectionsPerPeer ?? DEFAULTS.peers.connectionsPerPeer,
      preference: 0,
      has: (piece) => this.peerMayServe(piece) && holds(peer, piece),
    };
  }

  /**
   * Whether a peer may serve piece `piece` here: a lease holder takes from peers only pieces
   * whose digest the (earlier) lease holder published, which it can check them against; the
   * others come from the origin.
   */
  private peerMayServe(piece: number): boolean {
    if (this.originOnly.has(piece)) return false;
    return !this.lease || this.plan.manifest !== undefined || this.leaderDigests[piece] !== undefined;
  }

  /**
   * Adds or updates holders of blob `blobId` (this download's id, or, for a follower, the
   * digest the leader published once done); returns the slot ids that are new.
   */
  private track(holders: PeerHolder[], size: number | undefined, blobId = this.plan.id): string[] {
    const added: string[] = [];
    for (const holder of holders) {
      if (holder.id === this.options.nodeId || this.excluded.has(holder.id)) continue;
      if (blobId !== this.plan.id && holder.complete) {
        // A node this download already takes pieces from finished: it serves the whole blob
        // under its digest now, through the same slot (no new slot that starts cold).
        const same = this.peers.get(peerSlotId(holder.id));
        if (same && !this.droppedSlots.has(peerSlotId(holder.id))) {
          same.source.rename(blobId);
          same.holder = { ...same.holder, complete: true };
          continue;
        }
      }
      const slotId = blobId === this.plan.id ? peerSlotId(holder.id) : `${holder.id}/${blobId.slice(0, 12)}`;
      const known = this.peers.get(slotId);
      if (known) {
        // A node that finished leaves its partial under the source id: it stays complete.
        known.holder = { ...holder, complete: holder.complete || known.holder.complete };
        for (const piece of holder.pieces ?? []) known.pieces.add(piece);
        continue;
      }
      const source = new PeerSource({
        nodeId: holder.id,
        baseUrl: holder.url,
        digest: blobId,
        size: size ?? this.plan.size,
        token: this.options.agentToken,
        stallTimeoutMs: this.options.stallTimeoutMs,
        maxSockets: this.options.connectionsPerPeer ?? DEFAULTS.peers.connectionsPerPeer,
        publishedName: blobId === this.plan.digest ? undefined : () => this.publishedDigest(),
      });
      this.peers.set(slotId, { holder, source, pieces: new Set(holder.pieces ?? []) });
      added.push(slotId);
    }
    return added;
  }

  /**
   * Starts refreshing holders (and the lease) while the engine runs; new peers go to `add`,
   * and so does the origin if this node takes the lease over. `originSlot` says whether the
   * origin is already among the download's sources.
   */
  start(add: (slot: SwarmSlot) => void, originSlot: SwarmSlot | undefined, originAdded: boolean): void {
    this.originSlot = originSlot;
    this.originAdded = originAdded;
    this.addSlot = add;
    const tick = async (): Promise<void> => {
      await this.refresh().catch(() => undefined);
      if (this.refreshTimer)
        this.refreshTimer = setTimeout(() => void tick(), this.options.refreshMs ?? DEFAULTS.peers.refreshMs);
    };
    this.refreshTimer = setTimeout(() => void tick(), this.options.refreshMs ?? DEFAULTS.peers.refreshMs);
    this.refreshTimer.unref();
  }

  /**
   * The digest the lease holder published for the source, once it has; one question at a
   * time however many requests come back 404 at once.
   */
  private publishedDigest(): Promise<string | undefined> {
    if (this.published) return Promise.resolve(this.published);
    if (this.asking) return this.asking;
    this.asking = this.control
      .sourceDigest(this.key)
      .then((digest) => (this.published ??= digest))
      .catch(() => undefined)
      .finally(() => (this.asking = undefined));
    return this.asking;
  }

  /**
   * The sha256 piece `index` of the blob (`layout`) must have, for a follower that took some
   * of its bytes from a peer: the one the lease holder published under the source id, asked
   * for when this node lacks it (not more often than every refresh) and waited for. Undefined
   * when none will come: this node holds the lease now, so the piece goes to the origin.
   */
  async expectedPiece(index: number, layout: { size: number; pieceSize: number }): Promise<string | undefined> {
    for (let askedAsHolder = false, asked = false, holderGone = false; ;) {
      const known = this.leaderDigests[index];
      if (known !== undefined) {
        this.checked.set(index, known);
        return known;
      }
      if (this.closed) return undefined;
      if (this.lease && askedAsHolder) {
        this.originOnly.add(index);
        return undefined;
      }
      if (holderGone) {
        throw new NoSourceError(
          `the node fetching this blob from the origin is gone without publishing the digest of piece ${index}, which a peer sent: nothing can check it, and --no-origin keeps this node from taking its place`,
          { hint: 'rerun without --no-origin, or once another node has fetched it: nothing unchecked was kept' },
        );
      }
      askedAsHolder = this.lease !== undefined;
      // A node that may not lead never takes a dead holder's lease over (the refresh does that
      // for the others): once asked in vain, it looks whether anybody holds the lease still,
      // and gives up once nobody has for peers.publishWaitMs (a node that can lead takes a
      // free lease within seconds, and publishes the digests from then on); it asks once more
      // before (a holder that finished released it after publishing).
      if (asked && !this.options.useOrigin) holderGone = await this.holderGone();
      asked = true;
      await this.askPieces(layout);
    }
  }

  /**
   * Whether the blob's lease is free, without leading by it: taken and given back at once
   * (granted: nobody held it), or who holds it. Undefined without an answer.
   */
  private async probeLease(): Promise<LeaseAnswer | undefined> {
    const answer = await this.control.lease(this.plan.id, this.options.nodeId).catch(() => undefined);
    if (answer?.granted) await this.control.releaseLease(this.plan.id, answer.token).catch(() => undefined);
    return answer;
  }

  /**
   * For a node that may not lead: whether nobody has held the blob's lease for
   * peers.publishWaitMs, at every look (the lease taken and given back at once, so a node
   * that can lead gets it at its next try). Looked at every SLOW_EVERY refreshes at most.
   */
  private async holderGone(): Promise<boolean> {
    const spacing = SLOW_EVERY * (this.options.refreshMs ?? DEFAULTS.peers.refreshMs);
    const now = Date.now();
    if (now - this.lastLeaseLookAt >= spacing) {
      this.lastLeaseLookAt = now;
      const lease = await this.probeLease();
      if (lease?.granted) {
        this.leaseFreeSince ??= now;
      } else if (lease) {
        this.leaseFreeSince = undefined;
      }
    }
    const waitMs = this.options.publishWaitMs ?? DEFAULTS.peers.publishWaitMs;
    return this.leaseFreeSince !== undefined && Date.now() - this.leaseFreeSince >= waitMs;
  }

  /** Asks the control plane for the published piece digests: one question at a time, spaced. */
  private askPieces(layout: { size: number; pieceSize: number }): Promise<void> {
    this.askingPieces ??= (async () => {
      const spacing = this.options.refreshMs ?? DEFAULTS.peers.refreshMs;
      const wait = this.lastPiecesAt + spacing - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      this.lastPiecesAt = Date.now();
      let record: PieceRecord | undefined;
      try {
        // Under the blob's name among peers, as the lease holder publishes them (the source id,
        // or the digest when it was pinned).
        record = await this.control.pieces(this.plan.id);
        this.piecesAnsweredAt = Date.now();
      } catch (err) {
        const waitMs = this.options.publishWaitMs ?? DEFAULTS.peers.publishWaitMs;
        if (Date.now() - this.piecesAnsweredAt < waitMs) return;
        throw new NoSourceError(
          `the control plane did not answer for ${Math.round(waitMs / 1000)} s: no digest to check the pieces taken from peers against (${(err as Error).message})`,
          { hint: 'rerun once the control plane answers: nothing unchecked was kept' },
        );
      }
      if ((record?.pieces.length ?? 0) * layout.pieceSize < layout.size) {
        // The leader done: its manifest holds every piece (its last digests may not have gone out).
        const published = this.plan.digest ?? this.published ?? (await this.publishedDigest());
        if (published) record = (await this.control.manifest(published).catch(() => undefined)) ?? record;
      }
      if (!record) return;
      if (record.size !== layout.size || record.pieceSize !== layout.pieceSize) {
        throw new DigestMismatchError(
          `the node fetching this blob from the origin published pieces of ${record.size} bytes (pieces of ${record.pieceSize}); this download has ${layout.size} (pieces of ${layout.pieceSize}): the origin changed?`,
          { hint: 'rerun once the other node has finished: nothing unchecked was kept' },
        );
      }
      record.pieces.forEach((digest, i) => (this.leaderDigests[i] = digest));
    })().finally(() => (this.askingPieces = undefined));
    return this.askingPieces;
  }

  /**
   * A follower's digest from its pieces: the digest the lease holder published for the source,
   * when the manifest the fleet records for it lists exactly `pieces` (every piece this node
   * counted, peers' pieces checked against the holder's digests and the origin's alike). That
   * manifest is what a swarm node trusts without hashing the whole file: the lease holder
   * published it with the source -> digest mapping, both from its one pass over the bytes.
   * Undefined (the file is then hashed and checked as before): this node holds the lease (it
   * took it over: its own digest is the one published), or any difference. `trusted` gives
   * the leader's digest, and fails the fetch when none is published in time (hashing the file
   * first would change nothing). A match is kept (vouchedFor): the follower's end asks the
   * control plane nothing more (it asked for the digest and the manifest again before).
   */
  async digestFromPieces(
    pieces: string[],
    layout: { size: number; pieceSize: number },
    trusted: () => Promise<string>,
  ): Promise<string | undefined> {
    if (this.lease || this.plan.manifest) return undefined;
    const digest = await trusted();
    // Empty: this node took the lease over meanwhile (its own digest stands: hashed).
    if (!digest) return undefined;
    const manifest = await this.control.manifest(digest).catch(() => undefined);
    if (
      !manifest ||
      !sameManifest(manifest, { digest, ...layout, pieces }) ||
      // What disagreement() would find, from the manifest in hand: a piece first checked
      // against another digest the holder published (then refetched) leaves it to the
      // whole-file check and its clear failure.
      this.disagreesWith(manifest) !== undefined
    ) {
      return undefined;
    }
    this.vouched = digest;
    return digest;
  }

  /** Whether digestFromPieces made the blob `digest`: its checks are done, none is asked again. */
  vouchedFor(digest: string): boolean {
    return this.vouched === digest;
  }

  /**
   * Why the manifest of `digest` the fleet now records cannot be trusted by this follower:
   * a piece it checked against the lease holder's published digests has another one there.
   */
  async disagreement(digest: string): Promise<string | undefined> {
    if (this.checked.size === 0) return undefined;
    const manifest = await this.control.manifest(digest).catch(() => undefined);
    return manifest && this.disagreesWith(manifest);
  }

  private disagreesWith(manifest: Manifest): string | undefined {
    for (const [index, checkedWith] of this.checked) {
      if (manifest.pieces[index] !== checkedWith) {
        return `piece ${index} was checked against ${checkedWith}, the manifest of ${manifest.digest} says ${manifest.pieces[index] ?? 'nothing'}`;
      }
    }
    return undefined;
  }

  private async refresh(): Promise<void> {
    // Bitmaps change with every piece and are asked for at every refresh; the lease (TTL of
    // seconds), the published digest and a leader's peers change rarely and are asked for
    // every SLOW_EVERY refreshes: each question costs the control plane and this process
    // CPU, times every node of a fleet that cold-starts at once.
    const count = this.refreshes++;
    const slow = count % SLOW_EVERY === 0;
    // A leader's peers change rarely (it takes little from them), and a node with more
    // pieces to take from the peers it knows than it can have in flight learns nothing it
    // needs from a fresher bitmap: both ask every SLOW_EVERY refreshes (new holders, to
    // spread the load), not every one. In a fleet cold start the followers spend most of
    // their time so, behind the leader's complete blob.
    if (!slow && (this.lease || this.backlogged())) return;
    const holders = await this.control.holders(this.plan.id, this.locateQuery());
    if (!holders) return;
    for (const id of this.track(holders, this.plan.size)) this.addSlot?.(this.slotFor(id));
    // A node whose lease holder was dropped keeps looking at the lease: if the holder dies, it
    // takes it over (its own digest then stands, as nobody else will publish one).
    if ((this.originAllowed && !this.holderLost) || this.lease || !slow) return;
    // The leader done: its blob is complete under the digest it published; take it from there
    // (and from every node that has it by now), never from the origin again.
    this.published ??= await this.publishedDigest();
    if (this.published && this.published !== this.plan.id) {
      const complete = (await this.control.holders(this.published, this.locateQuery()))?.filter((h) => h.complete);
      for (const id of this.track(complete ?? [], this.plan.size, this.published)) this.addSlot?.(this.slotFor(id));
      return;
    }
    if (!this.options.useOrigin) return;
    // A lease that can be had again means its holder stopped renewing it without publishing:
    // it died. This node takes over and fetches what no live peer holds from the origin.
    if (this.plan.manifest) {
      // A node that knows the manifest (swarm) kept off the origin only while another node
      // fetched the blob from it under the lease. A free lease means nobody does any more (the
      // holder finished, or died): the origin may serve what no live peer holds, each piece
      // checked against the manifest. Waiting on instead left a node whose peers were all
      // dropped (one answered 404 for pieces it was listed with: its node restarted, or its
      // download moved on) with no source at all until it failed: the published digest said
      // "finished", and a dropped slot is never asked again. A peer that holds a piece still
      // serves it (originHas): a finished holder keeps the origin's egress at nothing here.
      if ((await this.probeLease())?.granted) {
        this.holderLost = false;
        this.allowOrigin();
      }
      return;
    }
    const lease = await this.control.lease(this.plan.id, this.options.nodeId);
    if (lease?.granted) {
      // The holder may have published and released it between the two questions: finished,
      // not dead. Then the blob is taken from it (next refresh), never from the origin.
      this.published ??= await this.control.sourceDigest(this.key).catch(() => undefined);
      // Under a known digest (pinned) the source's mapping says nothing about this holder:
      // it finished only if the digest's manifest is out (else it died: take over).
      const finished =
        this.published !== undefined &&
        (this.published !== this.plan.id ||
          (await this.control.manifest(this.plan.id).catch(() => undefined)) !== undefined);
      if (finished) {
        await this.control.releaseLease(this.plan.id, lease.token).catch(() => undefined);
        return;
      }
      this.holdLease(lease);
      // The digests the old holder published: pieces peers hold can still be checked against them.
      if (this.layout) void this.askPieces(this.layout).catch(() => undefined);
      this.status('the node fetching this blob from the origin is gone; this node takes over');
      this.allowOrigin();
    }
  }

  /** The origin may serve what no live peer holds: its slot joins the download (once). */
  private allowOrigin(): void {
    this.originAllowed = true;
    if (this.originSlot && !this.originAdded) {
      this.originAdded = true;
      this.addSlot?.(this.originSlot);
    }
  }

  /**
   * Holds the lease just granted: renewed every third of its TTL on a timer of its own, so
   * a renewal never waits behind the holder queries of a slow refresh (on a loaded machine
   * they took longer than the TTL: the lease lapsed under a live leader, another node took
   * it and the origin sent a second copy). Renewed only while bytes arrive: the others wait
   * on this node for as long as it holds the lease, so a download stuck on its origin lets
   * the lease lapse and another node leads.
   */
  private holdLease(grant: { token: string; ttlMs: number }): void {
    this.lease = { token: grant.token };
    this.lastProgressAt = Date.now();
    if (this.renewTimer) clearInterval(this.renewTimer);
    let renewing = false;
    this.renewTimer = setInterval(
      () => {
        if (renewing || !this.lease) return;
        const idleMs = Date.now() - this.lastProgressAt;
        if (idleMs >= (this.options.leaseIdleMs ?? DEFAULTS.peers.leaseIdleMs)) {
          if (!this.idleSaid)
            this.status(`no byte for ${Math.round(idleMs / 1000)} s: the lease lapses, another node may fetch it`);
          this.idleSaid = true;
          return;
        }
        renewing = true;
        void this.control
          .renewLease(this.plan.id, this.lease.token)
          .then((kept) => {
            if (!kept && !this.lostSaid) {
              this.lostSaid = true;
              this.status('lost the lease on this blob to another node; carrying on');
            }
          })
          .catch(() => undefined)
          .finally(() => (renewing = false));
      },
      Math.max(100, Math.floor(grant.ttlMs / 3)),
    );
    this.renewTimer.unref();
  }

  /** The download's body bytes so far: growing, it keeps this node's lease renewed. */
  progress(transferredBytes: number): void {
    if (transferredBytes <= this.transferred) return;
    this.transferred = transferredBytes;
    this.lastProgressAt = Date.now();
    this.idleSaid = false;
  }

  /**
   * A piece is on disk and verified: peers may take it from this node's agent. The lease
   * holder of a blob whose digest nobody knows yet also publishes the piece's sha256 under
   * the source id with its next announce, so the others can check each piece a peer sends.
   */
  pieceVerified(piece: number, digest?: string, layout?: { size: number; pieceSize: number }): void {
    this.verified.add(piece);
    if (digest !== undefined && layout !== undefined && !this.plan.manifest) {
      this.pieceDigests.set(piece, digest);
      this.layout ??= layout;
    }
    if (this.announceTimer) return;
    // At most one announce per ANNOUNCE_MS, and the pieces verified meanwhile go in the next
    // one, due at once when the last was long ago: peers learn of every piece within that.
    const wait = Math.max(0, this.lastAnnounceAt + ANNOUNCE_MS - Date.now());
    this.announceTimer = setTimeout(() => {
      this.announceTimer = undefined;
      this.lastAnnounceAt = Date.now();
      this.announce(false);
    }, wait);
  }

  private announce(complete: boolean, id = this.plan.id): void {
    const pieces = complete ? undefined : [...this.verified].sort((a, b) => a - b);
    const digests = complete ? undefined : this.digestPrefix();
    const lease = this.lease;
    const layout = this.layout;
    this.announcing = this.announcing
      .then(async () => {
        // Digests first: a follower told of a piece can then check it.
        if (digests && lease && layout) {
          await this.control
            .putPieces(this.plan.id, lease.token, { ...layout, pieces: digests })
            .catch(() => undefined);
        }
        await this.control.announce(id, this.options.nodeId, { complete, pieces });
      })
      .catch(() => undefined);
  }

  /** Publishes the piece digests not yet published (the last pieces, verified together at the end). */
  private publishDigests(): void {
    const digests = this.digestPrefix();
    const lease = this.lease;
    const layout = this.layout;
    if (!digests || !lease || !layout) return;
    this.announcing = this.announcing
      .then(() => this.control.putPieces(this.plan.id, lease.token, { ...layout, pieces: digests }))
      .catch(() => undefined);
  }

  /** The digests of pieces 0..k-1 this node hashed, when it leads and there are new ones. */
  private digestPrefix(): string[] | undefined {
    if (!this.lease || this.plan.manifest) return undefined;
    const prefix: string[] = [];
    for (let i = 0; this.pieceDigests.has(i); i++) prefix.push(this.pieceDigests.get(i)!);
    if (prefix.length === 0 || prefix.length === this.publishedPieces) return undefined;
    this.publishedPieces = prefix.length;
    return prefix;
  }

  /** A peer served bytes that failed verification: never asked again here, and reported. */
  dropped(slotId: string, reason: LoomError): void {
    if (slotId === ORIGIN_SLOT_ID && reason.code === 'LOOM_ERR_DIGEST_MISMATCH' && this.plan.manifest) {
      // The origin's bytes fail the digest's manifest: the manifest is forged (then
      // no holder's pieces match it either) or the origin changed. No new holder settles
      // that; the fetch from the origin alone, checked whole against the pin, does.
      this.originRefuted = true;
      return;
    }
    const peer = this.peers.get(slotId);
    if (!peer || this.droppedSlots.has(slotId)) return;
    this.droppedSlots.add(slotId);
    const node = peer.holder.id;
    this.status(`peer ${slotId} dropped: ${reason.message}`);
    // Bad bytes: the node is never asked again here, under any name, and is reported. Other
    // failures (it finished and serves the blob under its digest now, it is busy or slow)
    // drop this slot only.
    if (reason.code === 'LOOM_ERR_DIGEST_MISMATCH') {
      this.excluded.add(node);
      // Under the name it serves the blob by here (the digest, or the source id for a partial
      // holder while the digest is unknown), so its replica there is the one counted against.
      // Held with any manifest: its digest (pinned, or the URL's mapping) is checked on the
      // whole file, and a manifest published by another node may be the one that lies.
      if (this.plan.manifest) {
        this.heldReports.push([peer.source.blob, node, reason.message]);
      } else {
        this.report(peer.source.blob, node, reason.message);
      }
    }
    // A node kept off the origin waits on the lease holder: was it the one dropped?
    if (!this.lease && !this.originAllowed && !this.holderLost) this.lookAtLeaseHolder();
  }

  /**
   * After a drop: asks who holds the blob's lease, and when every holder is a node dropped
   * here, stops waiting on it (see holderLost). Before, a follower whose only peer was the
   * lease holder's dead agent waited for the engine's source wait (60 s) while the holder,
   * still downloading, renewed its lease; then failed, or planned again to the same wait.
   */
  private lookAtLeaseHolder(): void {
    if (this.lookingAtHolder) {
      // Asked before this drop: the answer may not count it; asked again once in.
      this.lookAgain = true;
      return;
    }
    this.lookingAtHolder = (async () => {
      do {
        this.lookAgain = false;
        await this.askLeaseHolder();
      } while (this.lookAgain && !this.closed && !this.lease && !this.originAllowed && !this.holderLost);
    })().finally(() => (this.lookingAtHolder = undefined));
  }

  /** One look at the lease's holders (see lookAtLeaseHolder). */
  private async askLeaseHolder(): Promise<void> {
    // probeLease gives a granted lease back even when the download ended meanwhile (a peer
    // blamed at its end): kept, it would hold every other node off the origin for a lease's TTL.
    const answer = await this.probeLease();
    // Granted: nobody holds it (its holder died): a node that may lead takes it over at its
    // next refresh; one that may not waits as it did for a holder gone.
    if (!answer || answer.granted || this.closed) return;
    const nodes = answer.holders ?? [];
    if (nodes.length === 0 || !nodes.every((node) => this.nodeDropped(node))) return;
    this.holderLost = true;
    const who = nodes.join(', ');
    if (!this.options.useOrigin) {
      this.status(
        `the node fetching this blob from the origin (${who}) cannot serve it here, and --no-origin keeps this node off the origin`,
      );
      return;
    }
    this.status(
      `the node fetching this blob from the origin (${who}) cannot serve it here: what no live peer holds comes from the origin`,
    );
    this.allowOrigin();
  }

  /** Whether node `node` can serve nothing here: excluded, or every slot of it dropped. */
  private nodeDropped(node: string): boolean {
    if (this.excluded.has(node)) return true;
    const slots = [...this.peers].filter(([, peer]) => peer.holder.id === node);
    return slots.length > 0 && slots.every(([slotId]) => this.droppedSlots.has(slotId));
  }

  /**
   * How long the download waits for a source able to serve a missing piece (new holders, a
   * peer's has() turning true): `waitMs`, or nothing once the node it waited on is gone and
   * it may not use the origin.
   */
  sourceWaitMs(waitMs: number): number {
    if (this.originRefuted) return 0;
    return this.holderLost && !this.options.useOrigin ? 0 : waitMs;
  }

  /**
   * The download is complete and its digest computed: publish what this node now vouches
   * for, and announce it as a complete holder. Returns the trusted digest it was checked
   * against (a follower waits for the leader's).
   */
  async finished(manifest: Manifest, verifiedAgainst: VerifiedAgainst): Promise<void> {
    // The whole file matched the pin: the manifest the dropped peers failed was the pin's.
    this.releaseHeldReports();
    if (this.announceTimer) clearTimeout(this.announceTimer);
    this.announceTimer = undefined;
    this.publishDigests();
    // The mapping is checked against the piece list published under the lease: sent first.
    await this.announcing;
    if (this.plan.role !== 'follower' || this.lease) {
      const lease = this.lease && { id: this.plan.id, token: this.lease.token };
      await this.control.publish(this.key, manifest, verifiedAgainst, lease).catch(() => undefined);
    }
    this.announce(true, manifest.digest);
    await this.announcing;
  }

  /**
   * After the download failed and the origin's bytes, fetched alone, matched the pin with the
   * very pieces of the manifest the dropped peers failed: that manifest was right, so they
   * served bad bytes. Sends the held reports (callable after close) and waits for them.
   */
  async manifestConfirmed(): Promise<void> {
    this.releaseHeldReports();
    await this.reporting;
  }

  /** Sends the reports held while the manifest was unproven (see heldReports). */
  private releaseHeldReports(): void {
    for (const [blob, node, reason] of this.heldReports.splice(0)) this.report(blob, node, reason);
  }

  /** Reports a bad peer to the control plane, tracked in `reporting` so close() waits for it. */
  private report(blob: string, node: string, reason: string): void {
    const report = this.control.report(blob, node, reason).catch(() => undefined);
    this.reporting = Promise.all([this.reporting, report]).then(() => undefined);
  }

  /**
   * The digest a follower's bytes must have: the pinned one, else the leader's, once
   * published. A follower that took the lease over from a leader that died unpublished is
   * the one the others wait for: nobody else will publish, so its own digest (`own`) stands,
   * as the first node to finish the fetch from the origin.
   */
  async trustedDigest(timeoutMs: number, own: string): Promise<string | undefined> {
    if (this.plan.digest) return this.plan.digest;
    // Once answered it is not asked again (publishedDigest keeps it): a node cannot change
    // a source's mapping (409).
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const digest = await this.publishedDigest();
      if (digest) return digest;
      if (this.lease) return own;
      if (Date.now() >= deadline) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.announceTimer) clearTimeout(this.announceTimer);
    this.announceTimer = undefined;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    await this.announcing;
    await this.reporting;
    if (this.lease) await this.control.releaseLease(this.plan.id, this.lease.token).catch(() => undefined);
    for (const peer of this.peers.values()) peer.source.close();
  }
}
