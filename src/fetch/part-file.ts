// The file a download writes into before it is complete: preallocated to its final size,
// written at random offsets by many workers, flushed and renamed into place at the end.
import { createRequire } from 'node:module';
import { write as writeFd } from 'node:fs';
import { open, rename, statfs, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { DiskFullError, diskError } from '../core/errors.js';
import { formatBytes } from '../core/units.js';

/** child_process is loaded only when fallocate is asked for. */
function execFileAsync(file: string, args: string[]): Promise<unknown> {
  const { execFile } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  return promisify(execFile)(file, args);
}

export type Preallocation = 'fallocate' | 'truncate';

export class PartFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  /** Opens (creating if needed) without truncating, so a resumed download keeps its bytes. */
  static async open(path: string): Promise<PartFile> {
    try {
      const handle = await open(path, 'a+').then(async (h) => {
        // 'a+' creates without truncating; reopen 'r+' because appends ignore positions.
        await h.close();
        return open(path, 'r+');
      });
      return new PartFile(path, handle);
    } catch (err) {
      throw diskError(err, `creating ${path}`, path);
    }
  }

  /**
   * Reserves `size` bytes after checking free space. `truncate` (the default of the fetch
   * options) extends the file sparsely; `fallocate` makes the file system promise the blocks
   * too, and falls back to `truncate` where fallocate(1) is missing or unsupported.
   */
  async preallocate(size: number, mode: Preallocation): Promise<void> {
    const free = await freeBytes(dirname(this.path));
    // Blocks the part already holds are overwritten in place, not allocated again.
    const { blocks } = await this.handle.stat();
    const needed = size - Math.min(size, blocks * 512);
    if (free !== undefined && needed > free) {
      throw new DiskFullError(`not enough space for ${this.path}: ${shortfall(needed, free)}`, {
        path: this.path,
        hint: 'free space on that file system or choose another --out',
      });
    }
    if (mode === 'fallocate' && size > 0) {
      try {
        await execFileAsync('fallocate', ['-l', String(size), this.path]);
        return;
      } catch (err) {
        const stderr = String((err as { stderr?: unknown }).stderr ?? '');
        if (/No space left/i.test(stderr))
          throw diskError(
            Object.assign(new Error(stderr), { code: 'ENOSPC', path: this.path }),
            `reserving space for ${this.path}`,
          );
        // Not installed, or the file system cannot: fall through to a sparse file.
      }
    }
    try {
      const { size: current } = await this.handle.stat();
      if (current !== size) await this.handle.truncate(size);
    } catch (err) {
      throw diskError(err, `sizing ${this.path}`, this.path);
    }
  }

  /** Writes all of buffer[0, length) at `position`; a short write is continued, never trusted. */
  async write(buffer: Buffer, length: number, position: number): Promise<void> {
    let written = 0;
    try {
      while (written < length) {
        const { bytesWritten } = await this.handle.write(buffer, written, length - written, position + written);
        if (bytesWritten <= 0)
          throw Object.assign(new Error('write made no progress'), { code: 'ENOSPC', path: this.path });
        written += bytesWritten;
      }
    } catch (err) {
      throw diskError(err, `writing ${this.path}`, this.path);
    }
  }

  /**
   * write() for the data path, called once per slab: the same short-write rule with one
   * callback per pwrite instead of promises. The promise form (FileHandle.write, an async
   * function, the slab writer's then/finally) allocated ~20 MB per GiB at 128 KiB slabs,
   * which kept V8's young generation growing through a long download (README, "Memory").
   * `done` runs once, never synchronously.
   */
  writeAt(buffer: Buffer, length: number, position: number, done: (err: Error | undefined) => void): void {
    const fd = this.handle.fd;
    const step = (written: number): void => {
      writeFd(fd, buffer, written, length - written, position + written, (err, bytesWritten) => {
        if (!err && bytesWritten <= 0)
          err = Object.assign(new Error('write made no progress'), { code: 'ENOSPC', path: this.path });
        if (err) done(diskError(err, `writing ${this.path}`, this.path));
        else if (written + bytesWritten < length) step(written + bytesWritten);
        else done(undefined);
      });
    };
    step(0);
  }

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.handle.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  async size(): Promise<number> {
    return (await this.handle.stat()).size;
  }

  /** Sets the exact final size (a stream of unknown length may end short of a guess). */
  async truncate(size: number): Promise<void> {
    await this.handle.truncate(size);
  }

  async sync(): Promise<void> {
    try {
      await this.handle.datasync();
    } catch (err) {
      throw diskError(err, `flushing ${this.path}`, this.path);
    }
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

/**
 * fdatasync in the background every `every` bytes written (the download's fsync option): the
 * disk's work overlaps the network's, so the final flush before the rename has little left.
 */
export class BackgroundSync {
  private unsynced = 0;
  private running: Promise<void> | undefined;

  constructor(private readonly every: number) {}

  wrote(part: PartFile, length: number): void {
    this.unsynced += length;
    if (this.unsynced < this.every || this.running) return;
    this.unsynced = 0;
    this.running = part
      .sync()
      .catch(() => undefined)
      .finally(() => {
        this.running = undefined;
      });
  }

  /** The sync in flight, if any (it never rejects). */
  settled(): Promise<void> | undefined {
    return this.running;
  }
}

/** "67.1 MB needed, 12.0 MB free", in bytes when rounding would show the two the same. */
export function shortfall(needed: number, free: number): string {
  const [n, f] = [formatBytes(needed), formatBytes(free)];
  return n === f ? `${needed} bytes needed, ${free} bytes free` : `${n} needed, ${f} free`;
}

async function freeBytes(dir: string): Promise<number | undefined> {
  try {
    const stats = await statfs(dir);
    return stats.bavail * stats.bsize;
  } catch (err) {
    throw diskError(err, `checking free space in ${dir}`, dir);
  }
}

/** Atomic rename; the destination only ever holds a complete file. */
export async function moveIntoPlace(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    throw diskError(err, `moving the finished file to ${to}`);
  }
}
