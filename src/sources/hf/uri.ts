// Names of things on the Hugging Face Hub as users write them: `org/repo[@rev]`,
// `hf://org/repo[@rev][/path]`, `hf://datasets/org/name[@rev][/path]`. A revision holding a
// slash (refs/pr/1) is written percent-encoded (`@refs%2Fpr%2F1`), as the Hub's own clients do.
import { InvalidUrlError } from '../../core/errors.js';
import { DEFAULTS } from '../../core/defaults.js';

export type HfRepoType = 'model' | 'dataset' | 'space';

export interface HfRef {
  repoType: HfRepoType;
  /** `org/name`. */
  repoId: string;
  /** As given; undefined means the default branch (`main`). */
  revision: string | undefined;
  /** A file in the repo (URIs with a path only). */
  path: string | undefined;
}

const TYPE_PREFIXES: Record<string, HfRepoType> = { models: 'model', datasets: 'dataset', spaces: 'space' };
const NAME = /^[A-Za-z0-9][\w.-]*$/;

export const DEFAULT_REVISION = DEFAULTS.hub.revision;

export function isHfUri(input: string): boolean {
  return input.startsWith('hf://');
}

/**
 * Parses a repo or file name. `repoType` (from --repo-type) applies when the name has no
 * `datasets/` or `spaces/` prefix; a prefix that contradicts it is refused.
 */
export function parseHfRef(input: string, repoType?: HfRepoType): HfRef {
  const bad = (why: string): InvalidUrlError =>
    new InvalidUrlError(`"${input}" is not a Hugging Face repo or file: ${why}`, {
      hint: 'write org/repo[@revision], hf://org/repo[@revision]/path or hf://datasets/org/name',
    });
  let rest = input.startsWith('hf://') ? input.slice(5) : input;
  rest = rest.replace(/\/+$/, '');
  let type: HfRepoType | undefined;
  const first = rest.split('/')[0] ?? '';
  if (first in TYPE_PREFIXES && rest.split('/').length >= 3) {
    type = TYPE_PREFIXES[first];
    rest = rest.slice(first.length + 1);
  }
  if (type && repoType && type !== repoType) throw bad(`it names a ${type} but --repo-type is ${repoType}`);
  const parts = rest.split('/');
  if (parts.length < 2) throw bad('a repo is named org/name');
  const org = parts[0]!;
  let name = parts[1]!;
  let revision: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    revision = name.slice(at + 1);
    name = name.slice(0, at);
    try {
      revision = decodeURIComponent(revision);
    } catch {
      throw bad('the revision is not valid percent-encoding');
    }
    if (!revision) throw bad('empty revision after @');
  }
  if (!NAME.test(org) || !NAME.test(name)) throw bad(`"${org}/${name}" is not a valid repo id`);
  const pathParts = parts.slice(2);
  if (pathParts.some((p) => p === '' || p === '.' || p === '..')) throw bad('the file path has empty, . or .. parts');
  return {
    repoType: type ?? repoType ?? 'model',
    repoId: `${org}/${name}`,
    revision,
    path: pathParts.length ? pathParts.join('/') : undefined,
  };
}

/** The prefix the Hub puts before a repo id in file URLs: '' for models. */
export function urlPrefix(type: HfRepoType): string {
  return type === 'model' ? '' : `${type}s/`;
}

/** Percent-encodes each segment of a path in the repo (slashes kept). */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** The file's resolve URL at a revision (a commit hash makes it immutable). */
export function resolveUrl(
  endpoint: string,
  ref: Pick<HfRef, 'repoType' | 'repoId'>,
  revision: string,
  path: string,
): string {
  return `${endpoint}/${urlPrefix(ref.repoType)}${ref.repoId}/resolve/${encodeURIComponent(revision)}/${encodePath(path)}`;
}

/** The display form: hf://[datasets/]org/name[@rev][/path]. */
export function formatHfRef(ref: HfRef): string {
  const rev = ref.revision ? `@${encodeURIComponent(ref.revision)}` : '';
  return `hf://${urlPrefix(ref.repoType)}${ref.repoId}${rev}${ref.path ? `/${ref.path}` : ''}`;
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;
