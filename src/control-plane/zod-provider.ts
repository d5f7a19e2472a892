// Zod schemas in fastify's own validation step: routes declare `schema: { params, body,
// querystring }` with zod types, fastify runs them before the handler (a 400 naming the
// field, the handler never sees bad input), and handlers get the parsed types. A dozen lines
// instead of a dependency: fastify-type-provider-zod does the same, with more than we need.
import type { FastifySchemaCompiler, FastifyTypeProvider } from 'fastify';
import type { z, ZodType } from 'zod';
import { ValidationError } from '../core/errors.js';

export interface ZodTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends ZodType ? z.output<this['schema']> : unknown;
  serializer: this['schema'] extends ZodType ? z.input<this['schema']> : unknown;
}

/** How a part of the request is named in a 400: route parameters by their own name. */
const PART_NAMES: Record<string, string> = { body: 'body', querystring: 'query', params: '', headers: 'headers' };

export const zodValidatorCompiler: FastifySchemaCompiler<ZodType> =
  ({ schema, httpPart }) =>
  (data: unknown) => {
    const result = schema.safeParse(data);
    if (result.success) return { value: result.data };
    const issue = result.error.issues[0]!;
    const where = PART_NAMES[httpPart ?? ''] ?? httpPart ?? '';
    const field = [where, ...issue.path.map(String)].filter(Boolean).join('.') || where || 'request';
    return { error: new ValidationError(`invalid ${field}: ${issue.message}`) };
  };
