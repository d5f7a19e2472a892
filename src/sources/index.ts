// Picks the source for a URL by its scheme. Today http and https; the Hub (hf://) and S3
// (s3://) join here, so callers never name a source class.
import { InvalidUrlError } from '../core/errors.js';
import { HttpSource, type HttpSourceOptions } from './http.js';
import type { Source } from './source.js';

export type SourceOptions = HttpSourceOptions;

const SCHEMES = ['http:', 'https:'] as const;

/** The source that serves `url`; InvalidUrlError for a malformed URL or an unknown scheme. */
export function sourceFor(url: string, options: SourceOptions): Source {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidUrlError(`"${url}" is not a valid URL`, {
      hint: 'give a full URL such as https://host/path/model.safetensors',
    });
  }
  switch (parsed.protocol) {
    case 'http:':
    case 'https:':
      return new HttpSource(url, options);
    default:
      throw new InvalidUrlError(`unsupported URL scheme "${parsed.protocol}" in ${url}`, {
        hint: `use one of: ${SCHEMES.map((s) => `${s}//`).join(', ')}`,
      });
  }
}
