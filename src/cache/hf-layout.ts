// The standard Hugging Face cache, written exactly as the Hub's own clients write it, so
// transformers, vLLM and `hf cache scan` read what Loom put there:
//   {hub}/{models|datasets}--org--name/blobs/{etag}           the bytes
//   {hub}/…/snapshots/{commit}/{path}  -> ../../blobs/{etag}   relative symlinks
//   {hub}/…/refs/{revision}                                    the commit, no newline
//   {hub}/.locks/{repo folder}/{etag}.lock                     created while a blob is written
// A blob appears whole: it is a hard link of the node cache's verified blob, made under a
// temporary name and renamed into place (the Hub's clients write {etag}.incomplete first).
// Without the node cache, it is downloaded beside its place and renamed once verified.
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { mkdir, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { diskError } from '../core/errors.js';
import type { HfRepoType } from '../sources/hf/uri.js';

/** HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (XDG_CACHE_HOME respected). */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface', 'hub');
}

/** `models--org--name`, `datasets--org--name`. */
export function repoFolderName(type: HfRepoType, repoId: string): string {
  return [`${type}s`, ...repoId.split('/')].join('--');
}

export class HfRepoCache {
  readonly dir: string;
  readonly lockDir: string;

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
    return join(this.dir, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    return join(this.dir, 'snapshots', commit);
  }

  pointerPath(commit: string, path: string): string {
    return join(this.snapshotDir(commit), ...path.split('/'));
  }

  /** The commit refs/{revision} holds, if any. */
  readRef(revision: string): string | undefined {
    try {
      return readFileSync(join(this.dir, 'refs', ...revision.split('/')), 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  }

  /** Records that `revision` names `commit` (nothing for a revision that is the commit itself). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const file = join(this.dir, 'refs', ...revision.split('/'));
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
