// Who is calling the control plane. Two kinds of credential, both bearer tokens compared in
// constant time (a caller cannot learn a token a byte at a time from response timings):
// - the admin token (`--token-file`), which can do everything;
// - per-node tokens derived from a cluster secret (`--cluster-secret`):
//   hex(HMAC-SHA256(secret, "loom-node:" + nodeId)). A node names itself in `X-Loom-Node`
//   (or the route's node, where the path has one), and can then speak only for itself.
// Without either, the control plane is open: every caller may do everything.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { ForbiddenError, UnauthorizedError } from '../core/errors.js';
import { NODE_ID } from '../core/validate.js';

/** The header a node names itself in when it presents its own token. */
export const NODE_HEADER = 'x-loom-node';

/** The token a node presents: hex(HMAC-SHA256(secret, "loom-node:" + nodeId)). */
export function nodeToken(secret: string, nodeId: string): string {
  return createHmac('sha256', secret).update(`loom-node:${nodeId}`).digest('hex');
}

export type Caller =
  /** No credential is configured: anyone may do anything. */
  | { kind: 'open' }
  | { kind: 'admin' }
  | { kind: 'node'; id: string }
  /** Credentials are configured and none was presented (reads may still be open). */
  | { kind: 'anonymous' };

export interface AuthOptions {
  token?: string;
  clusterSecret?: string;
}

/** Node tokens' digests kept at most (a fleet's worth); the cache starts again past it. */
const MAX_CACHED_NODES = 100_000;

function digestOf(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

export class Authenticator {
  private readonly admin: Buffer | undefined;
  private readonly secret: string | undefined;
  /**
   * sha256 of each node's token, for nodes that have authenticated: an HMAC and a hash
   * less per request (~11 -> ~4 µs here). Only tokens that matched are kept, so callers
   * naming made-up nodes cannot fill it.
   */
  private readonly nodeDigests = new Map<string, Buffer>();

  constructor(options: AuthOptions) {
    this.admin = options.token ? digestOf(options.token) : undefined;
    this.secret = options.clusterSecret || undefined;
  }

  /** Whether any credential is configured (else the control plane is open). */
  get required(): boolean {
    return this.admin !== undefined || this.secret !== undefined;
  }

  /**
   * Who presented `authorization`. `claimed` is the node the request names (X-Loom-Node, or
   * the route's node). Throws UnauthorizedError for a bearer token that is neither the admin
   * token nor the claimed node's.
   */
  identify(authorization: string | undefined, claimed: string | undefined): Caller {
    if (!this.required) return { kind: 'open' };
    const presented = authorization?.startsWith('Bearer ') ? authorization.slice('Bearer '.length).trim() : undefined;
    if (presented === undefined || presented === '') return { kind: 'anonymous' };
    // Hashing first gives equal lengths, which timingSafeEqual needs, whatever was sent.
    const digest = digestOf(presented);
    if (this.admin && timingSafeEqual(digest, this.admin)) return { kind: 'admin' };
    if (this.secret && claimed !== undefined && NODE_ID.test(claimed)) {
      const known = this.nodeDigests.get(claimed);
      const expected = known ?? digestOf(nodeToken(this.secret, claimed));
      if (timingSafeEqual(digest, expected)) {
        if (!known) {
          if (this.nodeDigests.size >= MAX_CACHED_NODES) this.nodeDigests.clear();
          this.nodeDigests.set(claimed, expected);
        }
        return { kind: 'node', id: claimed };
      }
    }
    throw new UnauthorizedError('wrong bearer token', {
      hint: this.secret
        ? `a node sends Authorization: Bearer <its node token> and ${NODE_HEADER}: <its node id>; an admin the --token-file token`
        : 'send Authorization: Bearer <token> (the control plane was started with --token-file)',
    });
  }

  /** Throws UnauthorizedError for a caller without a credential. */
  static requireCredential(caller: Caller): void {
    if (caller.kind === 'anonymous') {
      throw new UnauthorizedError('missing bearer token', {
        hint: 'send Authorization: Bearer <token> (an admin token, or a node token with X-Loom-Node)',
      });
    }
  }
}

/** A node may act only for itself; the admin and an open control plane for anyone. */
export function requireSelf(caller: Caller, nodeId: string, what: string): void {
  Authenticator.requireCredential(caller);
  if (caller.kind === 'node' && caller.id !== nodeId) {
    throw new ForbiddenError(`node ${caller.id} cannot ${what} for node ${nodeId}`, {
      hint: 'a node token speaks only for its own node id',
    });
  }
}

/** Routes only the admin token (or an open control plane) may use. */
export function requireAdmin(caller: Caller, what: string): void {
  Authenticator.requireCredential(caller);
  if (caller.kind === 'node') {
    throw new ForbiddenError(`node ${caller.id} cannot ${what}`, { hint: 'this needs the admin token' });
  }
}
