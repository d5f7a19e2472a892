// Parses `loom fetch` (and `loom pull`) arguments with node:util instead of commander, from
// the same flag tables. A cache hit is mostly process start-up, and commander is the largest
// module the CLI loads; argv that does not parse cleanly here (help, a typo, a bad value)
// goes to commander, which owns the usage messages.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FETCH_FLAGS, type FetchFlags, type FlagSpec } from './fetch-flags.js';

export interface ParsedFetch {
  url: string | undefined;
  flags: FetchFlags;
}

interface FlagShape {
  long: string;
  short: string | undefined;
  takesValue: boolean;
}

function shapeOf(flags: string): FlagShape {
  const match = /^(?:-(\w), )?--([\w-]+)( <[^>]+>)?$/.exec(flags);
  if (!match) throw new Error(`flag spelled unexpectedly: ${flags}`);
  return { short: match[1], long: match[2]!, takesValue: match[3] !== undefined };
}

const camel = (name: string): string => name.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());

/** The flags of `args` (what follows `loom fetch`), or undefined when commander should answer. */
export function parseFetchArgv(args: string[]): ParsedFetch | undefined {
  const parsed = parseFlagArgv(FETCH_FLAGS, args);
  if (!parsed || parsed.positionals.length > 1) return undefined;
  return { url: parsed.positionals[0], flags: parsed.flags as unknown as FetchFlags };
}

/**
 * `args` read against a flag table as commander would read it (the same names, defaults,
 * repeatable lists and value parsers), or undefined when anything is off: an unknown flag,
 * a missing value, a value the parser refuses.
 */
export function parseFlagArgv(
  specs: readonly FlagSpec[],
  args: string[],
): { positionals: string[]; flags: Record<string, unknown> } | undefined {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  const shapes = specs.map((spec) => ({ spec, shape: shapeOf(spec.flags) }));
  for (const { spec, shape } of shapes) {
    options[shape.long] = {
      type: shape.takesValue ? 'string' : 'boolean',
      ...(shape.short ? { short: shape.short } : {}),
      ...(spec.repeatable ? { multiple: true } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch {
    return undefined;
  }
  const flags: Record<string, unknown> = {};
  try {
    for (const { spec, shape } of shapes) {
      const value = parsed.values[shape.long];
      const negated = shape.long.startsWith('no-');
      const name = camel(negated ? shape.long.slice(3) : shape.long);
      if (value === undefined) {
        const fallback = spec.repeatable ? [] : negated ? true : spec.defaultValue;
        if (fallback !== undefined) flags[name] = fallback;
      } else if (negated) {
        flags[name] = false;
      } else if (Array.isArray(value)) {
        flags[name] = value.map((v) => (spec.parse ? spec.parse(String(v)) : v));
      } else {
        flags[name] = spec.parse && typeof value === 'string' ? spec.parse(value) : value;
      }
    }
  } catch {
    return undefined;
  }
  return { positionals: parsed.positionals, flags };
}
