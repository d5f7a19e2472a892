// Checks for Hub files that have no sha256: small (non-LFS) files are named by their git blob
// sha1, sha1("blob <size>\0" + bytes). Through the node cache the check runs on the finished
// download before it is stored or placed (fetchCached's verifyDownload), so bytes that fail
// are kept nowhere and a stored copy is never checked again; without the cache it runs on
// the file before it is renamed into place (fetchFileChecked).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { DigestMismatchError } from '../core/errors.js';

export async function gitBlobSha1OfFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha1').update(`blob ${size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Throws DigestMismatchError unless `file` is the git blob `expected`. */
export async function checkGitSha1(
  file: string,
  size: number,
  expected: string,
  what: { url: string; label: string },
): Promise<void> {
  const actual = await gitBlobSha1OfFile(file, size);
  if (actual === expected) return;
  throw new DigestMismatchError(`${what.label}: git sha1 ${actual} is not the ${expected} the Hub gave`, {
    url: what.url,
    expected,
    actual,
    hint: 'nothing was kept; rerun to download it again',
  });
}
