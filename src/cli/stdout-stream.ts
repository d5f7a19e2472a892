// `-o -`: the file goes to stdout, in order, while it downloads. Ranges arrive out of order,
// so the bytes land in a temporary file first and its finished prefix (the bytes from 0 with
// no gap) is copied to stdout as it grows; the rest once the download is done and verified.
// The writes go through libuv's thread pool (fs.write on fd 1), so a slow reader at the other
// end of the pipe holds up the copy, never the event loop the download runs on.
import { write } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DiskAccessError, LoomError, SourceChangedError } from '../core/errors.js';
import { formatBytes } from '../core/units.js';
import type { FetchProgress } from '../fetch/download.js';

const CHUNK = 1024 * 1024;

function writeOnce(fd: number, bytes: Buffer, offset: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, bytes, offset, bytes.length - offset, null, (err, written) => (err ? reject(err) : resolve(written)));
  });
}

export class StdoutStream {
  /** Bytes written to stdout so far. */
  sent = 0;
  /** Why the copy stopped; the download is aborted through `signal` then. */
  failure: LoomError | undefined;
  private readonly controller = new AbortController();
  private ready = 0;
  private file: FileHandle | undefined;
  private inode: number | undefined;
  private copying: Promise<void> | undefined;
  private stopped = false;

  /** `partPath`: where the download writes; `fd`: where the bytes go (1, stdout). */
  constructor(
    private readonly partPath: string,
    private readonly fd = 1,
  ) {}

  /** Aborted when the copy to stdout cannot go on: the download has no reader left. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  onProgress(progress: FetchProgress): void {
    if (this.failure) return;
    if (progress.contiguousBytes < this.sent) {
      this.fail(
        new SourceChangedError(
          `the download started over after ${formatBytes(this.sent)} had gone to stdout; those bytes cannot be taken back`,
          { hint: 'the output is incomplete; rerun the command' },
        ),
      );
      return;
    }
    this.ready = Math.max(this.ready, progress.contiguousBytes);
    this.kick();
  }

  /** Copies what is left from the finished file `path` (`size` bytes), then closes. */
  async finish(path: string, size: number): Promise<void> {
    await this.copying;
    if (this.failure) throw this.failure;
    const info = await stat(path);
    // The part file renamed into place is the same file; another one (a cache hit, a file
    // placed by a restart) is read from the start, which is only right if nothing was sent.
    if (this.file && this.inode !== info.ino) {
      await this.file.close();
      this.file = undefined;
      if (this.sent > 0) throw this.startedOver();
    }
    this.file ??= await open(path, 'r');
    this.ready = size;
    await this.copy();
    if (this.failure) throw this.failure;
  }

  /** Stops copying (the download failed: nothing more goes out) and closes the file. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.copying?.catch(() => undefined);
    await this.file?.close();
    this.file = undefined;
  }

  private startedOver(): LoomError {
    return new SourceChangedError(
      `the file was written anew after ${formatBytes(this.sent)} had gone to stdout; those bytes cannot be taken back`,
      { hint: 'the output is incomplete; rerun the command' },
    );
  }

  private fail(err: LoomError): void {
    this.failure ??= err;
    this.controller.abort();
  }

  private kick(): void {
    if (this.copying) return;
    this.copying = this.copyFromPart().finally(() => {
      this.copying = undefined;
      if (!this.failure && !this.stopped && this.file && this.ready > this.sent) this.kick();
    });
  }

  private async copyFromPart(): Promise<void> {
    let current: number | undefined;
    try {
      current = (await stat(this.partPath)).ino;
    } catch {
      // Not there yet, or already renamed into place: finish() copies the rest.
    }
    if (this.file && current !== undefined && current !== this.inode) {
      // The download made its part file anew (a stream without ranges starting over).
      if (this.sent > 0) {
        this.fail(this.startedOver());
        return;
      }
      await this.file.close();
      this.file = undefined;
    }
    if (!this.file) {
      if (current === undefined) return;
      this.file = await open(this.partPath, 'r');
      this.inode = (await this.file.stat()).ino;
    }
    await this.copy();
  }

  private async copy(): Promise<void> {
    const file = this.file!;
    const buffer = Buffer.allocUnsafe(CHUNK);
    while (this.sent < this.ready && !this.failure && !this.stopped) {
      const { bytesRead } = await file.read(buffer, 0, Math.min(CHUNK, this.ready - this.sent), this.sent);
      if (bytesRead === 0) break;
      let offset = 0;
      while (offset < bytesRead) {
        try {
          offset += await writeOnce(this.fd, buffer.subarray(0, bytesRead), offset);
        } catch (err) {
          const code = (err as { code?: string }).code;
          // A pipe another program opened non-blocking: wait for room.
          if (code === 'EAGAIN') {
            await sleep(10);
            continue;
          }
          const reason = code === 'EPIPE' ? 'the reading end of the pipe was closed' : (err as Error).message;
          this.fail(
            new DiskAccessError(`writing to stdout failed after ${formatBytes(this.sent + offset)}: ${reason}`, {
              cause: err,
            }),
          );
          return;
        }
      }
      this.sent += bytesRead;
    }
  }
}
