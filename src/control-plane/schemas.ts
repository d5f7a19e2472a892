// What the control plane accepts, checked with zod before anything reaches a store. Every
// rule names the field it guards, so a 400 says exactly what to fix.
import { z } from 'zod';

/** Node ids: bounded, and only characters that are safe in keys, URLs and logs. */
export const nodeId = z
  .string()
  .min(1, 'must not be empty')
  .max(128, 'must be at most 128 characters')
  .regex(/^[A-Za-z0-9._:-]+$/, 'may contain only letters, digits, and . _ : -');

export const digest = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex digits (a sha256)');

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

export const heartbeatBody = z.strictObject({
  url: agentUrl,
  zone: zone.optional(),
  freeUploadSlots: z.number().int().min(0).max(100_000).default(0),
});

export const manifestBody = z
  .strictObject({
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
    pieces: z.array(digest).max(100_000),
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
  pieces: z.array(z.number().int().min(0)).max(1_000_000).optional(),
});

export const sourceBody = z.strictObject({ key: sourceUrl, digest });

export const reportBody = z.strictObject({
  digest,
  node: nodeId,
  reporter: nodeId,
  reason: z.string().max(512).optional(),
});

export const peersQuery = z.strictObject({
  node: nodeId.optional(),
  zone: zone.optional(),
  limit: z.coerce.number().int().min(1).max(50).default(8),
});

export const sourceQuery = z.strictObject({ key: sourceUrl });

/** The original tool's registry API. */
export const legacyRegisterBody = z.object({
  node: z.string().min(1).max(2048),
  model: z.string().min(1).max(512),
});

export const legacyModel = z.string().min(1).max(512);
