// The node agent's life: it serves the node cache to peers (agent-server.ts) and keeps the
// control plane's picture of this node true. It heartbeats (at the interval the control
// plane asks for, with a boot id `epoch` so a restarted node is never advertised with blobs
// it no longer has), announces every complete blob of the cache and every download in
// progress with its verified pieces, withdraws what `loom cache gc/rm/verify` removed, and
// deregisters when stopped.
//
// The cache is diffed against what was last announced on every cycle (a few seconds) and
// at once when fs.watch sees blobs/ or a pieces file change. A control plane that is down
// or forgot this node costs nothing but log lines: the agent keeps serving, keeps beating
// with backoff, and announces everything again once it is heard. One that refuses this
// node's token (401/403) is a misconfiguration a restart cannot fix: said once, clearly, and
// /readyz answers 503 with the reason until a heartbeat is accepted.
import { randomUUID } from 'node:crypto';
import { watch, promises as fsp, type FSWatcher } from 'node:fs';
import { hostname } from 'node:os';
import {
  ControlPlaneClient,
  heartbeatInterval,
  type ControlPlaneAnswer,
  type HeartbeatBody,
  type ManifestRecord,
  type ReplicaAnnouncement,
} from '../control-plane/client.js';
import { AGENT_SERVER_DEFAULTS, AgentServer, type Readiness } from './agent-server.js';
import { readCachedManifest } from './cached-manifest.js';
import {
  CONTROL_PLANE_EXAMPLE,
  checkHttpUrl,
  checkNodeId,
  checkZone,
  isRefusal,
  tokenRefusal,
} from './node-identity.js';
import { PartialBlobReader } from './partial-blobs.js';
import { DEFAULTS } from '../core/defaults.js';

export const AGENT_DEFAULTS = DEFAULTS.agent;

const DIGEST = /^[0-9a-f]{64}$/;

export interface AgentOptions {
  controlPlane: string;
  /** Where controlPlane came from, as its messages name it (default: --control-plane). */
  controlPlaneFrom?: string;
  cacheRoot: string;
  nodeId: string;
  listen: { host: string; port: number };
  /** URL peers use to reach this agent. Default: see advertiseUrl. */
  advertise?: string;
  zone?: string;
  /** Sent to the control plane, and required from peers (Authorization: Bearer) unless peerToken is given. */
  token?: string;
  /**
   * The token peers must present instead of `token`: with per-node control-plane tokens,
   * peers cannot know this node's, so the fleet shares one peer token.
   */
  peerToken?: string;
  maxUploads?: number;
  scanIntervalMs?: number;
  reannounceIntervalMs?: number;
  /** React to cache changes at once with fs.watch. Default true. */
  watch?: boolean;
  /** Per control-plane request. Default 2 s. */
  controlPlaneTimeoutMs?: number;
  /** The manifest of a complete blob, published with its announcement. Default: the cache's. */
  manifestFor?: (digest: string) => Promise<ManifestRecord | undefined>;
  log?: (level: 'info' | 'warn', message: string) => void;
}

/** The node id when none is given: the host name, made safe for the control plane. */
export function defaultNodeId(host: string = hostname()): string {
  const id = host.replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 128);
  return id || 'loom-node';
}

/** The advertised URL: the listen address, or the host name when listening on a wildcard. */
export function advertiseUrl(
  host: string,
  port: number,
  machine: string = hostname(),
): { url: string; warning?: string } {
  const wildcard = host === '' || host === '0.0.0.0' || host === '::' || host === '[::]';
  if (!wildcard) return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` };
  const url = `http://${machine}:${port}`;
  return {
    url,
    warning: `listening on ${host || '*'}: advertising ${url} to peers; pass --advertise URL if they cannot resolve ${machine}`,
  };
}

export class Agent {
  /** Boot id: new at every start, so the control plane drops what an earlier run announced. */
  readonly epoch = randomUUID();
  readonly server: AgentServer;
  readonly client: ControlPlaneClient;
  readonly nodeId: string;
  private url = '';
  private port = 0;
  private readonly partials: PartialBlobReader;
  private readonly log: (level: 'info' | 'warn', message: string) => void;
  private readonly manifestFor: (digest: string) => Promise<ManifestRecord | undefined>;
  /** digest -> what was last announced for it ('complete' or 'partial:<pieces>'). */
  private readonly announced = new Map<string, string>();
  /** digest -> when its partial replica was last announced. */
  private readonly partialAnnouncedAt = new Map<string, number>();
  private readonly manifestsPublished = new Set<string>();
  private registered = false;
  /** Why the node is not registered now (what /readyz answers), or ready. */
  private readinessNow: Readiness = {
    ready: false,
    code: 'LOOM_ERR_NETWORK',
    message: 'no heartbeat accepted by the control plane yet',
  };
  /** Whether what an earlier run of this node announced was cleared (see sendHeartbeat). */
  private announceAll = true;
  private lastFullAnnounce = 0;
  private stopped = false;
  private intervalMs: number = AGENT_DEFAULTS.heartbeatIntervalMs;
  private failures = 0;
  private beats = 0;
  private beating: Promise<boolean> | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private readonly watchers: FSWatcher[] = [];
  private syncing: Promise<void> | undefined;
  private syncQueued: Promise<void> | undefined;

  private constructor(private readonly options: AgentOptions) {
    this.nodeId = checkNodeId(options.nodeId);
    checkZone(options.zone);
    this.client = new ControlPlaneClient({
      baseUrl: checkHttpUrl(options.controlPlane, options.controlPlaneFrom ?? '--control-plane', CONTROL_PLANE_EXAMPLE),
      token: options.token,
      timeoutMs: options.controlPlaneTimeoutMs,
      // With per-node tokens a route that names no node (PUT /v1/blobs/:digest, the manifest)
      // needs the header: without it the control plane refused every manifest (401).
      nodeId: this.nodeId,
    });
    this.server = new AgentServer({
      cacheRoot: options.cacheRoot,
      token: options.peerToken ?? options.token,
      maxUploads: options.maxUploads,
      readiness: () => this.readinessNow,
    });
    this.partials = new PartialBlobReader(this.server.layout);
    this.log = options.log ?? ((level, message) => process.stderr.write(`loom: agent: ${level}: ${message}\n`));
    this.manifestFor = options.manifestFor ?? ((digest) => readCachedManifest(this.server.layout, digest));
  }

  /** Starts serving, then heartbeats and announcements; resolves once listening. */
  static async start(options: AgentOptions): Promise<Agent> {
    const agent = new Agent(options);
    const advertised = options.advertise === undefined ? undefined : checkHttpUrl(options.advertise, '--advertise');
    const address = await agent.server.listen(options.listen.host, options.listen.port);
    agent.port = address.port;
    if (advertised) agent.url = advertised;
    else {
      const { url, warning } = advertiseUrl(options.listen.host, address.port);
      agent.url = url;
      if (warning) agent.log('warn', warning);
    }
    agent.startLoops();
    return agent;
  }

  /** The URL announced to the control plane (what peers fetch from). */
  get advertisedUrl(): string {
    return this.url;
  }

  /** The port the server is bound to. */
  get boundPort(): number {
    return this.port;
  }

  /** Whether the last heartbeat was accepted. */
  get isRegistered(): boolean {
    return this.registered;
  }

  private startLoops(): void {
    void this.beatAndSchedule();
    const scanMs = this.options.scanIntervalMs ?? AGENT_DEFAULTS.scanIntervalMs;
    this.scanTimer = setInterval(() => void this.sync(), scanMs);
    this.scanTimer.unref();
    if (this.options.watch !== false) this.startWatching();
  }

  private startWatching(): void {
    const soon = (): void => {
      if (this.stopped || this.watchTimer) return;
      this.watchTimer = setTimeout(() => {
        this.watchTimer = undefined;
        void this.sync();
      }, 100);
    };
    const { blobs, tmp } = this.server.layout;
    const add = (dir: string, relevant: (name: string) => boolean): void => {
      try {
        const watcher = watch(dir, { persistent: false }, (_event, name) => {
          if (name === null || relevant(name.toString())) soon();
        });
        // A watcher that breaks (directory removed) leaves the periodic scan, which is enough.
        watcher.on('error', () => watcher.close());
        this.watchers.push(watcher);
      } catch {
        // fs.watch is unavailable on some file systems; the periodic scan covers them.
      }
    };
    add(blobs, () => true);
    // tmp/ sees a write event for every chunk of every download: only pieces files matter.
    add(tmp, (name) => name.endsWith('.pieces.json'));
  }

  private async beatAndSchedule(): Promise<void> {
    const ok = await this.heartbeat();
    if (this.stopped) return;
    // Cleared after the await: two callers that joined one heartbeat leave one timer, not two.
    clearTimeout(this.beatTimer);
    const delay = ok
      ? this.intervalMs
      : Math.min(this.intervalMs, AGENT_DEFAULTS.retryBaseMs * 2 ** Math.min(this.failures - 1, 10));
    this.beatTimer = setTimeout(() => void this.beatAndSchedule(), delay);
  }

  /** Sends one heartbeat (joining one in flight); true when the control plane accepted it. */
  heartbeat(): Promise<boolean> {
    this.beating ??= this.sendHeartbeat().finally(() => (this.beating = undefined));
    return this.beating;
  }

  private async sendHeartbeat(): Promise<boolean> {
    this.beats++;
    const body: HeartbeatBody = { url: this.url, freeUploadSlots: this.server.freeUploadSlots, epoch: this.epoch };
    if (this.options.zone) body.zone = this.options.zone;
    const answer = await this.client.sendHeartbeat(this.nodeId, body);
    if (this.stopped) return answer.ok;
    if (answer.ok) {
      const seconds = heartbeatInterval(answer);
      if (seconds !== undefined) this.intervalMs = seconds * 1000;
      this.failures = 0;
      this.readinessNow = { ready: true };
      // The control plane dropped this node's replicas (a new epoch, a lapsed or unknown
      // node, a restarted control plane): everything is announced again.
      const resync = (answer.body as { resync?: unknown } | undefined)?.resync === true;
      if (!this.registered || resync) {
        if (!this.registered)
          this.log('info', `registered as ${this.nodeId} (${this.url}) with ${this.options.controlPlane}`);
        this.registered = true;
        this.announceAll = true;
        void this.sync();
      }
      return true;
    }
    return this.failed(answer);
  }

  private failed(answer: ControlPlaneAnswer): false {
    this.failures++;
    const before = this.readinessNow;
    const { status } = answer;
    const refused = isRefusal(status);
    const code = (answer.body as { error?: { code?: unknown } } | undefined)?.error?.code;
    const refusal = refused
      ? tokenRefusal(status!, answer.message, this.nodeId, this.options.token !== undefined)
      : undefined;
    this.readinessNow = refusal
      ? {
          ready: false,
          code: refusal.code,
          message: `${refusal.reason}: not registered, so no peer finds this node; ${refusal.hint}`,
        }
      : {
          ready: false,
          code: typeof code === 'string' ? code : status === undefined ? 'LOOM_ERR_NETWORK' : 'LOOM_ERR_BAD_RESPONSE',
          message: `heartbeat failed: ${answer.message}`,
        };
    // Said once per change (a refusal repeats at every retry with the same answer), not forever.
    const changed = before.ready || before.code !== this.readinessNow.code;
    if (this.registered || this.failures === 1 || changed)
      this.log(
        'warn',
        refused
          ? `${this.readinessNow.message}; /readyz answers 503 until a heartbeat is accepted (retrying)`
          : `${this.readinessNow.message}; still serving, retrying`,
      );
    this.registered = false;
    return false;
  }

  /**
   * Brings the control plane in line with the cache now: announces what is new or changed,
   * withdraws what is gone. Calls made while one runs are served by one more run after it.
   */
  sync(): Promise<void> {
    if (this.syncing) {
      this.syncQueued ??= this.syncing.then(() => {
        this.syncQueued = undefined;
        return this.sync();
      });
      return this.syncQueued;
    }
    this.syncing = this.syncOnce()
      .catch((err: unknown) => this.log('warn', `announcing the cache failed: ${(err as Error).message}`))
      .finally(() => (this.syncing = undefined));
    return this.syncing;
  }

  /** What the cache holds now: complete blobs, and downloads with at least one verified piece. */
  private async scan(): Promise<Map<string, ReplicaAnnouncement>> {
    const held = new Map<string, ReplicaAnnouncement>();
    for (const partial of await this.partials.list()) {
      if (partial.verified.length > 0) held.set(partial.digest, { complete: false, pieces: partial.verified });
    }
    const names = await fsp.readdir(this.server.layout.blobs).catch(() => [] as string[]);
    for (const name of names) if (DIGEST.test(name)) held.set(name, { complete: true });
    return held;
  }

  private async syncOnce(): Promise<void> {
    if (!this.registered || this.stopped) return;
    const held = await this.scan();
    const reannounceMs = this.options.reannounceIntervalMs ?? AGENT_DEFAULTS.reannounceIntervalMs;
    const all = this.announceAll || Date.now() - this.lastFullAnnounce >= reannounceMs;
    this.announceAll = false;
    if (all) this.lastFullAnnounce = Date.now();
    for (const [digest, replica] of held) {
      if (this.stopped) return;
      const state = replica.complete ? 'complete' : `partial:${replica.pieces!.join(',')}`;
      // Partial replicas expire quickly on the control plane: refreshed every heartbeat interval.
      const fresh = replica.complete || Date.now() - (this.partialAnnouncedAt.get(digest) ?? 0) < this.intervalMs;
      if (!all && fresh && this.announced.get(digest) === state) continue;
      const answer = await this.client.announce(digest, this.nodeId, replica);
      if (answer.ok) {
        this.announced.set(digest, state);
        if (replica.complete) this.partialAnnouncedAt.delete(digest);
        else this.partialAnnouncedAt.set(digest, Date.now());
        if (replica.complete) await this.publishManifest(digest);
        continue;
      }
      if (answer.status === 404 || answer.status === undefined) {
        // 404: the control plane does not know this node as live (it restarted, or our
        // heartbeat lapsed). Either way: beat again, then announce everything.
        this.announceAll = true;
        if (answer.status === 404) {
          this.registered = false;
          void this.beatAndSchedule();
        } else this.log('warn', `announcing ${digest} failed: ${answer.message}; will retry`);
        return;
      }
      // Refused for good (401, 403, 400): say so, and retry only when the blob changes (or,
      // for a partial, at the next refresh).
      this.announced.set(digest, `refused:${state}`);
      if (!replica.complete) this.partialAnnouncedAt.set(digest, Date.now());
      this.log('warn', `the control plane refused the announcement of ${digest}: ${answer.message}`);
    }
    for (const digest of [...this.announced.keys()]) {
      if (held.has(digest) || this.stopped) continue;
      const answer = await this.client.withdraw(digest, this.nodeId);
      if (answer.ok || answer.status === 404) {
        this.announced.delete(digest);
        this.partialAnnouncedAt.delete(digest);
        this.manifestsPublished.delete(digest);
      } else if (answer.status === undefined) {
        this.log('warn', `withdrawing ${digest} failed: ${answer.message}; will retry`);
        return;
      } else {
        this.log('warn', `the control plane refused to withdraw ${digest}: ${answer.message}`);
        this.announced.delete(digest);
      }
    }
  }

  private async publishManifest(digest: string): Promise<void> {
    if (this.manifestsPublished.has(digest)) return;
    const manifest = await this.manifestFor(digest).catch(() => undefined);
    if (!manifest) return;
    const answer = await this.client.putManifest(manifest);
    if (answer.ok) this.manifestsPublished.add(digest);
    else if (answer.status === 409) {
      this.manifestsPublished.add(digest);
      this.log('warn', `the control plane holds a different manifest for ${digest}: ${answer.message}`);
    } else if (answer.status !== undefined && !mayHeal(answer.status)) {
      // A request the control plane will refuse again (malformed, too large): said once.
      this.manifestsPublished.add(digest);
      this.log('warn', `the control plane refused the manifest of ${digest}: ${answer.message}`);
    } else if (answer.status !== undefined) {
      // Not recorded as published: tried again with the blob's next announcement (the full
      // one every reannounceIntervalMs, or after a resync).
      this.log('warn', `the control plane refused the manifest of ${digest}: ${answer.message}; will retry`);
    }
  }

  /**
   * Stops announcing, deregisters (the control plane forgets the node and its replicas), then
   * closes the server, letting uploads in flight finish for up to `graceMs`.
   */
  async stop(graceMs: number = AGENT_SERVER_DEFAULTS.closeGraceMs): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.beatTimer);
    clearInterval(this.scanTimer);
    clearTimeout(this.watchTimer);
    for (const watcher of this.watchers) watcher.close();
    await this.syncing;
    await this.beating;
    const answer = await this.client.deregister(this.nodeId);
    if (answer.ok || answer.status === 404) this.log('info', `deregistered ${this.nodeId}`);
    else this.log('warn', `could not deregister ${this.nodeId}: ${answer.message} (its heartbeat will lapse)`);
    await this.server.close(graceMs);
  }
}

/** A refusal that may not last: credentials (fixed by an operator), throttling, a server error. */
function mayHeal(status: number): boolean {
  return isRefusal(status) || status === 408 || status === 429 || status >= 500;
}
