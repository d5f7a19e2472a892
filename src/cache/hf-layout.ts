// The standard Hugging Face cache, written exactly as the Hub's own clients write it, so
// transformers, vLLM and `hf cache scan` read what Loom put there:
//   {hub}/{models|datasets}--org--name/blobs/{etag}           the bytes
//   {hub}/…/snapshots/{commit}/{path}  -> ../../blobs/{etag}   relative symlinks
//   {hub}/…/refs/{revision}                                    the commit, no newline
//   {hub}/.locks/{repo folder}/{etag}.lock                     created while a blob is written
// A blob appears whole: it is a hard link of the node cache's verified blob, made under a
// temporary name and renamed into place (the Hub's clients write {etag}.incomplete first).
// Without the node cache, it is downloaded beside its place and renamed once verified.
// Names that come from the Hub (etags, commits) and the user (revisions) are checked before
// they are joined into a path: none of them may lead out of the repo's folder.
import { existsSync, lstatSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { link, mkdir, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { BadResponseError, CacheError, UsageError, diskError } from '../core/errors.js';
import { COMMIT_HASH, type HfRepoType } from '../sources/hf/uri.js';

/** A blob's name: the git sha1 (40 hex) or the sha256 (64 hex), lower case, as the Hub gives them. */
const BLOB_NAME = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (XDG_CACHE_HOME respected). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface', 'hub');
}

/** Numbers the temporary links of linkBlobTo, apart within this process (pids tell processes apart). */
let blobLinks = 0;

/**
 * Puts a hard link of an HF cache blob at `dest` (its folder must exist), replacing
 * whatever is there atomically (offline fetches and pulls). Linked under a name of its own
 * and renamed over `dest`: removing `dest` and then linking failed with EEXIST when another
 * process linked it in between (several jobs of a node starting from one HF cache).
 */
export async function linkBlobTo(blob: string, dest: string): Promise<void> {
  const temp = `${dest}.loom-${process.pid}-${++blobLinks}`;
  try {
    await link(blob, temp);
    await rename(temp, dest);
  } catch (err) {
    throw diskError(err, `linking ${dest}`);
  } finally {
    // Renaming a link over another link to the same file (a rerun) does nothing (POSIX), leaving it.
    await rm(temp, { force: true });
  }
}

/** `models--org--name`, `datasets--org--name`. */
export function repoFolderName(type: HfRepoType, repoId: string): string {
  return [`${type}s`, ...repoId.split('/')].join('--');
}

export class HfRepoCache {
  readonly dir: string;
  readonly lockDir: string;
  /**
   * The repo folder's real path, taken once: an offline pull checks every pointer of a
   * snapshot against it. With the pointers resolved by the system's realpath (one call, not
   * Node's lstat per path part), an offline pull of 2,000 files took 116 → 56 ms of CPU
   * (median, bench hub-offline; README Benchmarks).
   */
  private realDir: string | undefined;

  constructor(
    readonly hubCache: string,
    readonly repoType: HfRepoType,
    readonly repoId: string,
  ) {
    const folder = repoFolderName(repoType, repoId);
    this.dir = join(hubCache, folder);
    this.lockDir = join(hubCache, '.locks', folder);
  }

  blobPath(etag: string): string {
    // The Hub's listing is checked (api.ts); this keeps any other caller from joining a name
    // such as ../../secret.txt into blobs/.
    if (!BLOB_NAME.test(etag)) {
      throw new BadResponseError(`"${etag.slice(0, 80)}" is not a blob name (a git sha1 or a sha256) in ${this.dir}`);
    }
    return join(this.dir, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    if (!COMMIT_HASH.test(commit)) {
      throw new BadResponseError(`"${commit.slice(0, 80)}" is not a commit hash: no snapshot folder is named by it`);
    }
    return join(this.dir, 'snapshots', commit);
  }

  /** refs/{revision}: a branch or tag name, whose parts may not climb out of refs/. */
  refPath(revision: string): string {
    const parts = revision.split('/');
    if (parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\\') || p.includes('\0'))) {
      throw new UsageError(`the revision "${revision}" is not a branch, tag or commit name`, {
        hint: 'a revision has no empty, . or .. parts (git refuses them too)',
      });
    }
    return join(this.dir, 'refs', ...parts);
  }

  /**
   * The file a snapshot entry stands for, followed through its symlink. It must be inside the
   * repo's folder (blobs/, or a plain file in the snapshot): a link that leads elsewhere (left
   * by a lying Hub before Loom checked blob names, or planted) is not served or hard-linked.
   */
  resolvePointer(commit: string, path: string): string {
    const pointer = this.pointerPath(commit, path);
    let target: string;
    let root: string;
    try {
      target = realpathSync.native(pointer);
      root = this.realDir ??= realpathSync.native(this.dir);
    } catch (err) {
      throw diskError(err, `reading ${pointer}`);
    }
    if (!target.startsWith(root + sep)) {
      throw new CacheError(`the HF cache's ${pointer} leads out of ${this.dir} (to ${target}): not using it`, {
        path: pointer,
        hint: `remove ${this.snapshotDir(commit)} and pull again with network access`,
      });
    }
    return target;
  }

  pointerPath(commit: string, path: string): string {
    return join(this.snapshotDir(commit), ...path.split('/'));
  }

  /** The commit refs/{revision} holds, if any. */
  readRef(revision: string): string | undefined {
    const file = this.refPath(revision);
    try {
      const commit = readFileSync(file, 'utf8').trim();
      // Only a commit hash: the ref's content names the snapshot folder.
      return COMMIT_HASH.test(commit) ? commit : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records that `revision` names `commit` (nothing for a revision that is the commit itself). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const file = this.refPath(revision);
    try {
      if (this.readRef(revision) === commit) return;
      await mkdir(dirname(file), { recursive: true });
      const temp = `${file}.loom-${process.pid}`;
      await writeFile(temp, commit);
      await rename(temp, file);
    } catch (err) {
      throw diskError(err, `writing ${file}`);
    }
  }

  /** True when blobs/{etag} is there at `size` bytes. */
  hasBlob(etag: string, size: number): boolean {
    const stat = statSync(this.blobPath(etag), { throwIfNoEntry: false });
    return stat !== undefined && stat.isFile() && stat.size === size;
  }

  /** True when the snapshot entry for `path` is the symlink to blobs/{etag}. */
  hasPointer(commit: string, path: string, etag: string): boolean {
    const pointer = this.pointerPath(commit, path);
    try {
      return lstatSync(pointer).isSymbolicLink() && readlinkSync(pointer) === this.linkTarget(commit, path, etag);
    } catch {
      return false;
    }
  }

  /** Creates blobs/ and the blob's lock file, as the Python client leaves it. */
  async prepareBlob(etag: string): Promise<void> {
    try {
      await mkdir(join(this.dir, 'blobs'), { recursive: true });
      await mkdir(this.lockDir, { recursive: true });
      // The Python client leaves the (empty) lock file in place after writing; so does Loom.
      await writeFile(join(this.lockDir, `${etag}.lock`), '', { flag: 'a' });
    } catch (err) {
      throw diskError(err, `preparing ${this.dir}`);
    }
  }

  /** The relative target of a snapshot symlink: ../../blobs/{etag} plus one ../ per directory. */
  linkTarget(commit: string, path: string, etag: string): string {
    return relative(dirname(this.pointerPath(commit, path)), this.blobPath(etag));
  }

  /** snapshots/{commit}/{path} -> the blob, replacing whatever was there atomically. */
  async linkSnapshot(commit: string, path: string, etag: string): Promise<string> {
    const pointer = this.pointerPath(commit, path);
    if (this.hasPointer(commit, path, etag)) return pointer;
    const temp = `${pointer}.loom-${process.pid}-${Date.now()}`;
    try {
      await mkdir(dirname(pointer), { recursive: true });
      await symlink(this.linkTarget(commit, path, etag), temp);
      await rename(temp, pointer);
    } catch (err) {
      await rm(temp, { force: true });
      throw diskError(err, `linking ${pointer}`);
    }
    return pointer;
  }

  /** Every file path of a cached snapshot (for offline pulls), or undefined when absent. */
  async snapshotFiles(commit: string): Promise<string[] | undefined> {
    const root = this.snapshotDir(commit);
    if (!existsSync(root)) return undefined;
    const files: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else files.push(relative(root, full).split('\\').join('/'));
      }
    };
    await walk(root);
    return files.sort();
  }
}
