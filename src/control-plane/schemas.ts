// What the control plane accepts, checked with zod by fastify's own validation step (see
// zod-provider.ts) before any handler runs. Every rule names the field it guards, so a 400
// says exactly what to fix; every id and name is printable and bounded.
import { z } from 'zod';
import { DEFAULTS } from '../core/defaults.js';

/** At most this many piece digests in a manifest: the piece-size rule keeps every blob under it. */
export const MAX_PIECES = 1024;

/** Control characters, format characters and line separators: nothing a log or a key should carry. */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/** A bounded, non-empty string without control characters (names the original tool accepted). */
export function printable(max: number) {
  return z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !UNPRINTABLE.test(value), 'must not contain control characters');
}

/** Node ids: bounded, and only characters that are safe in keys, URLs and logs. */
export const nodeId = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[A-Za-z0-9._:-]+$/, 'may contain only letters, digits, and . _ : -');

export const digest = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits (a sha256)');

/** Lease tokens are 32 lower-case hex digits (128 random bits). */
export const leaseToken = z.string().regex(/^[0-9a-f]{32}$/, 'must be 32 lower-case hex digits (a lease token)');

const SOURCE_SCHEMES = ['http:', 'https:', 's3:', 'hf:'];

export const sourceUrl = z
  .string()
  .max(4096, 'must be at most 4096 characters')
  .refine((value) => {
    try {
      return SOURCE_SCHEMES.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, 'must be an http, https, s3 or hf URL');

export const agentUrl = z
  .string()
  .max(2048, 'must be at most 2048 characters')
  .refine((value) => {
    try {
      return ['http:', 'https:'].includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, 'must be an http or https URL');

export const zone = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9._-]+$/, 'may contain only letters, digits, and . _ -');

/** A boot id: printable, no spaces, bounded (a UUID fits). */
export const epoch = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[\x21-\x7e]+$/, 'may contain only printable ASCII without spaces');

// Route parameters and query strings.
export const nodeParams = z.strictObject({ id: nodeId });
export const digestParams = z.strictObject({ digest });
export const replicaParams = z.strictObject({ digest, node: nodeId });
export const leaseParams = z.strictObject({ digest, token: leaseToken });

export const heartbeatBody = z.strictObject({
  url: agentUrl,
  zone: zone.optional(),
  freeUploadSlots: z.number().int().min(0).max(100_000).default(0),
  epoch: epoch.optional(),
});

export const VERIFIED_AGAINST = ['sha256-pinned', 'hub-sha256', 's3-checksum', 'first-origin-fetch'] as const;
export type VerifiedAgainst = (typeof VERIFIED_AGAINST)[number];

/** A blob's size, piece size and piece digests: a manifest's, and the lease holder's list so far. */
const pieceListFields = {
  size: z
    .number()
    .int()
    .min(0)
    .max(2 ** 53 - 1),
  pieceSize: z
    .number()
    .int()
    .min(1)
    .max(2 ** 40),
  pieces: z.array(digest).max(MAX_PIECES, `must hold at most ${MAX_PIECES} piece digests`),
};

export const manifestBody = z
  .strictObject({
    ...pieceListFields,
    verifiedAgainst: z.enum(VERIFIED_AGAINST, {
      message: `must be one of ${VERIFIED_AGAINST.join(', ')}`,
    }),
  })
  .refine(
    (m) => m.pieces.length === Math.max(1, Math.ceil(m.size / m.pieceSize)) || (m.size === 0 && m.pieces.length <= 1),
    {
      message: 'must hold one digest per piece (ceil(size / pieceSize))',
      path: ['pieces'],
    },
  );

export const replicaBody = z.strictObject({
  complete: z.boolean(),
  pieces: z.array(z.number().int().min(0).max(MAX_PIECES)).max(MAX_PIECES).optional(),
});

export const sourceBody = z.strictObject({
  key: sourceUrl,
  digest,
  /** Repoint a key already mapped to another digest (admin, or an open control plane). */
  replace: z.boolean().optional(),
  /**
   * The token of the writer's lease on the source's id (never the digest's: any node can take
   * that one): a node maps a source only as the one that fetched it from the origin under it.
   */
  lease: z.string().min(1).max(128).optional(),
});

export const piecesParams = z.strictObject({ id: digest });

/** Piece digests a lease holder has hashed so far (a prefix of the blob's pieces). */
export const piecesBody = z
  .strictObject({
    /** The writer's lease on the source id. */
    lease: z.string().min(1).max(128),
    ...pieceListFields,
  })
  .refine((m) => m.pieces.length <= Math.max(1, Math.ceil(m.size / m.pieceSize)), {
    message: 'must hold at most one digest per piece (ceil(size / pieceSize))',
    path: ['pieces'],
  });

export const REPORT_KINDS = ['replica', 'manifest'] as const;

/**
 * A report against a replica (`node` served bad or no data), or against the manifest of
 * `digest` (`manifest`: its fingerprint, core/manifest.ts manifestFingerprint): the reporter
 * took bytes that matched every piece of it and the whole file missed the pinned digest.
 */
export const reportBody = z
  .strictObject({
    digest,
    kind: z.enum(REPORT_KINDS, { message: `must be one of ${REPORT_KINDS.join(', ')}` }).default('replica'),
    node: nodeId.optional(),
    manifest: digest.optional(),
    /** Only from an admin or an open control plane; a node reports as itself. */
    reporter: nodeId.optional(),
    reason: printable(512).optional(),
  })
  .superRefine((report, ctx) => {
    const [needed, other] =
      report.kind === 'manifest' ? (['manifest', 'node'] as const) : (['node', 'manifest'] as const);
    if (report[needed] === undefined)
      ctx.addIssue({ code: 'custom', path: [needed], message: `required in a ${report.kind} report` });
    else if (report[other] !== undefined)
      ctx.addIssue({ code: 'custom', path: [other], message: `not part of a ${report.kind} report` });
  });

export const MAX_LEASE_SLOTS = 64;

export const leaseBody = z.strictObject({
  node: nodeId,
  slots: z.number().int().min(1).max(MAX_LEASE_SLOTS).default(1),
});

export const peersQuery = z.strictObject({
  node: nodeId.optional(),
  zone: zone.optional(),
  limit: z.coerce.number().int().min(1).max(50).default(DEFAULTS.controlPlane.locateLimit),
});

export const sourceQuery = z.strictObject({ key: sourceUrl });

/** The original tool's registry API: a node as it names itself (a bare name, host:port or URL). */
export const legacyRegisterBody = z.object({
  node: printable(2048).refine((value) => !/\s/.test(value), 'must not contain spaces'),
  model: printable(512),
});

export const legacyModelParams = z.strictObject({ model: printable(512) });
