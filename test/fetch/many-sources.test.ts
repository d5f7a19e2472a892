// downloadBlob with several real origins as several sources: pieces checked against a
// trusted manifest, a source serving other bytes dropped, a failing source dropped, work
// moved to the others, and a clear error when no source can serve what is left.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { pieceCount, pieceRange, pieceSizeFor, type Manifest } from '../../src/core/manifest.js';
import { downloadBlob, startBlobDownload, type SourceSlot } from '../../src/fetch/download.js';
import { resolveFetchOptions } from '../../src/fetch/options.js';
import { PartFile } from '../../src/fetch/part-file.js';
import { PrefixHasher } from '../../src/fetch/prefix-hasher.js';
import { sourceFor } from '../../src/sources/index.js';
import type { Source } from '../../src/sources/source.js';
import { InvalidUrlError, LoomError, NoSourceError } from '../../src/index.js';
import { randomContent, sha256Of, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE = 6 * MiB + 4321;
const PIECE = 512 * 1024;
const content = randomContent(SIZE);
const dir = tempDir();

function manifestOf(bytes: Buffer, pieceSize: number): Manifest {
  const pieces: string[] = [];
  for (let i = 0; i < pieceCount(bytes.length, pieceSize); i++) {
    const [start, end] = pieceRange({ size: bytes.length, pieceSize }, i);
    pieces.push(sha256Of(bytes.subarray(start, end)));
  }
  return { digest: sha256Of(bytes), size: bytes.length, pieceSize, pieces };
}
const manifest = manifestOf(content.bytes, PIECE);

const servers: OriginServer[] = [];
const sources: Source[] = [];
after(async () => {
  for (const s of sources) s.close();
  await Promise.all(servers.map((s) => s.close()));
});

async function origin(bytes: Buffer = content.bytes, options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  server.setFile('/blob', bytes);
  servers.push(server);
  return server;
}

const options = resolveFetchOptions({ chunkSize: '256KiB', retryBaseDelay: 5, retryMaxDelay: 20, retryAttempts: 3 });

/** A real HTTP source that counts how often it was probed (a known size needs no probe). */
function counted(server: OriginServer): Source & { probes: number } {
  const source = sourceFor(server.url('/blob'), {
    maxRedirects: 10,
    stallTimeoutMs: 5_000,
    maxSockets: 8,
  });
  sources.push(source);
  const wrapped = Object.assign(Object.create(source) as Source, { probes: 0 }) as Source & { probes: number };
  wrapped.probe = (range, signal) => {
    wrapped.probes++;
    return source.probe(range, signal);
  };
  return wrapped;
}

function slot(id: string, source: Source, extra: Partial<SourceSlot> = {}): SourceSlot {
  return { id, kind: 'peer', source, maxConcurrency: 3, preference: 0, ...extra };
}

let n = 0;
const partPath = (): string => join(dir, `blob-${++n}.part`);

describe('manifest rules', () => {
  it('uses 16 MiB pieces, doubled until a blob has at most 1,024 of them', () => {
    assert.equal(pieceSizeFor(0), 16 * MiB);
    assert.equal(pieceSizeFor(16 * GiB), 16 * MiB);
    assert.equal(pieceSizeFor(16 * GiB + 1), 32 * MiB);
    assert.equal(pieceSizeFor(32 * GiB), 32 * MiB);
    assert.equal(pieceSizeFor(100e9), 128 * MiB);
    assert.equal(pieceCount(100e9, 128 * MiB), 746);
    assert.equal(pieceCount(0, 16 * MiB), 0);
    assert.deepEqual(pieceRange({ size: 40, pieceSize: 16 }, 2), [32, 40], 'the last piece is short');
  });

  it('digests every piece in the pass that hashes the prefix, however the prefix grows', async () => {
    const bytes = randomContent(5000).bytes;
    const path = join(dir, 'pieces.bin');
    await writeFile(path, bytes);
    const part = await PartFile.open(path);
    const pieces: Array<[number, string]> = [];
    const hasher = new PrefixHasher(part, { pieceSize: 1024, onPiece: (i, d) => pieces.push([i, d]) }, 700);
    for (const end of [10, 1024, 1500, 4096, 4999]) hasher.advance(end);
    const digest = await hasher.digest(5000);
    await part.close();
    const expected = manifestOf(bytes, 1024);
    assert.equal(digest, expected.digest);
    assert.deepEqual(
      pieces,
      expected.pieces.map((p, i) => [i, p]),
    );
  });
});

describe('downloadBlob', () => {
  it('takes pieces from three sources, checks each against the manifest, and drops the one sending other bytes', async () => {
    const corrupt = Buffer.from(content.bytes);
    for (let i = 0; i < corrupt.length; i += 4096) corrupt[i]! ^= 0xff;
    const [a, b, bad] = [await origin(), await origin(), await origin(corrupt)];
    const srcA = counted(a);
    const srcB = counted(b);
    const srcBad = counted(bad);
    const verified: number[] = [];
    const dropped: Array<[string, string]> = [];
    const part = partPath();
    const result = await downloadBlob({
      ...options,
      sources: [slot('a', srcA), slot('b', srcB), slot('bad', srcBad)],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE, manifest },
      produceManifest: false,
      onPieceVerified: (i) => verified.push(i),
      onSourceDropped: (id, reason) => dropped.push([id, reason.code]),
    });
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.equal(result.sha256, content.sha256);
    assert.deepEqual(result.manifest, manifest);
    assert.deepEqual(
      result.droppedSources.map((d) => [d.id, d.code]),
      [['bad', 'LOOM_ERR_DIGEST_MISMATCH']],
    );
    assert.deepEqual(dropped, [['bad', 'LOOM_ERR_DIGEST_MISMATCH']]);
    assert.deepEqual(
      [...verified].sort((x, y) => x - y),
      manifest.pieces.map((_, i) => i),
      'every piece verified exactly once',
    );
    assert.ok(bad.bytesServed > 0, 'the bad source was asked');
    assert.ok(result.bytesBySource.bad! > 0 && result.bytesBySource.bad! <= bad.bytesServed);
    assert.equal(result.bytesBySource.a! + result.bytesBySource.b!, a.bytesServed + b.bytesServed);
    assert.ok(result.bytesBySource.a! > 0 && result.bytesBySource.b! > 0, 'both good sources served');
    // Every good byte once, plus the pieces the bad source's bytes had to be replaced in.
    const goodServed = a.bytesServed + b.bytesServed;
    assert.ok(goodServed >= SIZE && goodServed <= SIZE + bad.bytesServed + 2 * PIECE, `${goodServed} served`);
    assert.equal(srcA.probes + srcB.probes + srcBad.probes, 0, 'a known size needs no probe');
    for (const server of [a, b, bad]) {
      assert.ok(
        server.requests.every((r) => r.range?.startsWith('bytes=')),
        'only ranges were asked for',
      );
    }
  });

  it('drops a source that keeps failing and finishes from the other', async () => {
    const good = await origin();
    const failing = await origin(content.bytes, { fault: () => ({ kind: 'status', status: 500 }) });
    const part = partPath();
    const result = await downloadBlob({
      ...options,
      sources: [slot('good', counted(good), { preference: 1 }), slot('failing', counted(failing))],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE },
      produceManifest: false,
    });
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.deepEqual(
      result.droppedSources.map((d) => [d.id, d.code]),
      [['failing', 'LOOM_ERR_HTTP_STATUS']],
    );
    assert.equal(result.bytesBySource.failing, 0);
    assert.equal(good.bytesServed, SIZE, 'the good source served every byte once');
  });

  it('drops a peer far behind the others, and its pieces go to the fast one', async () => {
    const fast = await origin();
    const slow = await origin(content.bytes, { rateLimitBytesPerSecond: 8 * 1024 });
    const part = partPath();
    const result = await downloadBlob({
      ...options,
      sources: [slot('fast', counted(fast)), slot('slow', counted(slow), { maxConcurrency: 2 })],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE, manifest },
      produceManifest: false,
    });
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.deepEqual(
      result.droppedSources.map((d) => [d.id, d.code]),
      [['slow', 'LOOM_ERR_STALLED']],
    );
    assert.match(result.droppedSources[0]!.message, /far behind/);
    assert.equal(result.bytesBySource.fast! + result.bytesBySource.slow!, SIZE);
  });

  it('produces the manifest in the pass that hashes the whole file', async () => {
    const [a, b] = [await origin(), await origin()];
    const verified: Array<[number, string]> = [];
    const part = partPath();
    const result = await downloadBlob({
      ...options,
      sources: [slot('a', counted(a)), slot('b', counted(b))],
      partPath: part,
      produceManifest: true,
      onPieceVerified: (i, digest) => verified.push([i, digest]),
    });
    const expected = manifestOf(content.bytes, pieceSizeFor(SIZE));
    assert.deepEqual(result.manifest, expected);
    assert.equal(result.sha256, content.sha256);
    assert.deepEqual(verified, [[0, expected.pieces[0]]], 'the prefix passed the one 16 MiB piece');
    assert.equal(a.bytesServed + b.bytesServed, SIZE);
    assert.ok(result.stats.lastByteToDigestSeconds !== undefined, 'seconds from last byte to digest recorded');
    assert.equal(existsSync(`${part}.journal`), false, 'the engine removes its journal once the part is complete');
  });

  it('fails with LOOM_ERR_NO_SOURCE, not a hang, when no source has a piece', async () => {
    const server = await origin();
    const part = partPath();
    await assert.rejects(
      downloadBlob({
        ...options,
        sources: [slot('peer', counted(server), { has: (piece) => piece !== 3 })],
        partPath: part,
        expected: { sha256: content.sha256, size: SIZE, manifest },
        produceManifest: false,
      }),
      (err: unknown) => {
        assert.ok(err instanceof NoSourceError);
        assert.equal(err.code, 'LOOM_ERR_NO_SOURCE');
        assert.equal(err.exitCode, 3);
        assert.match(err.message, new RegExp(`bytes ${3 * PIECE}-`));
        return true;
      },
    );
    assert.equal(server.bytesServed, SIZE - PIECE, 'every other piece was fetched');
  });

  it('takes a source added while running', async () => {
    const slow = await origin(content.bytes, { rateLimitBytesPerSecond: MiB });
    const fast = await origin();
    const part = partPath();
    const handle = startBlobDownload({
      ...options,
      sources: [slot('slow', counted(slow), { maxConcurrency: 1 })],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE, manifest },
      produceManifest: false,
    });
    setTimeout(() => handle.addSource(slot('fast', counted(fast))), 300);
    const result = await handle.result;
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.ok(result.bytesBySource.fast! > SIZE / 2, `the added source served ${result.bytesBySource.fast}`);
    assert.equal(result.bytesBySource.slow! + result.bytesBySource.fast!, SIZE);
  });

  it('refuses a manifest of another digest before any request', async () => {
    const server = await origin();
    await assert.rejects(
      downloadBlob({
        ...options,
        sources: [slot('a', counted(server))],
        partPath: partPath(),
        expected: { sha256: 'ab'.repeat(32), manifest },
        produceManifest: false,
      }),
      (err: unknown) => err instanceof LoomError && err.code === 'LOOM_ERR_USAGE',
    );
    assert.equal(server.requests.length, 0);
  });

  it('a pinned digest with a manifest: a bad piece is refetched, not hashed into the whole-file digest', async () => {
    const corrupt = Buffer.from(content.bytes);
    for (let i = 0; i < corrupt.length; i += 4096) corrupt[i]! ^= 0xff;
    const [a, bad] = [await origin(), await origin(corrupt)];
    const part = partPath();
    const result = await downloadBlob({
      ...options,
      sources: [slot('a', counted(a)), slot('bad', counted(bad))],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE, manifest, pinned: true },
      produceManifest: false,
    });
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.equal(result.sha256, content.sha256);
    // Every piece checked against the manifest, and the whole file against the pin: each counted.
    assert.ok(result.stats.hashedBytes >= 2 * SIZE, `hashedBytes ${result.stats.hashedBytes}`);
    assert.deepEqual(
      result.droppedSources.map((d) => [d.id, d.code]),
      [['bad', 'LOOM_ERR_DIGEST_MISMATCH']],
    );
  });

  it('a manifest forged for a pinned digest cannot pass: the whole file is checked against the pin', async () => {
    // Another file's pieces, published under the pinned digest (first writer wins on a
    // control plane): every piece matches the manifest, the file is not the pinned one.
    const evil = randomContent(SIZE);
    const forged: Manifest = { ...manifestOf(evil.bytes, PIECE), digest: content.sha256 };
    const server = await origin(evil.bytes);
    const part = partPath();
    const run = (pinned: boolean) =>
      downloadBlob({
        ...options,
        sources: [slot('liar', counted(server))],
        partPath: part,
        expected: { sha256: content.sha256, size: SIZE, manifest: forged, pinned },
        produceManifest: false,
      });
    await assert.rejects(
      run(true),
      (err: unknown) => err instanceof LoomError && err.code === 'LOOM_ERR_DIGEST_MISMATCH',
    );
    assert.equal(existsSync(part), false);
    // Unpinned (the digest and the manifest from the same publisher), the manifest is the trust.
    const trusted = await run(false);
    assert.equal(trusted.sha256, content.sha256);
    assert.equal(await sha256OfFile(part), evil.sha256);
  });

  it('resumes from the journal of the same digest fetched from another source', async () => {
    const slow = await origin(content.bytes, { rateLimitBytesPerSecond: 2 * MiB });
    const other = await origin();
    const part = partPath();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 800);
    await assert.rejects(
      downloadBlob({
        ...options,
        journalIntervalMs: 50,
        signal: controller.signal,
        sources: [slot('first', counted(slow), { maxConcurrency: 2 })],
        partPath: part,
        expected: { sha256: content.sha256, size: SIZE, manifest },
        produceManifest: false,
      }),
      (err: unknown) => err instanceof LoomError && err.code === 'LOOM_ERR_ABORTED',
    );
    assert.ok(existsSync(`${part}.journal`));
    const result = await downloadBlob({
      ...options,
      sources: [slot('second', counted(other))],
      partPath: part,
      expected: { sha256: content.sha256, size: SIZE, manifest },
      produceManifest: false,
    });
    assert.equal(await sha256OfFile(part), content.sha256);
    assert.ok(result.stats.resumedBytes > 0, 'resumed another source partial');
    assert.ok(other.bytesServed < SIZE, `the second source served ${other.bytesServed} of ${SIZE}`);
  });
});

describe('sourceFor', () => {
  it('picks the source by scheme and refuses an unknown one with a hint', () => {
    const source = sourceFor('https://example.com/m.bin', { maxRedirects: 1, stallTimeoutMs: 1000, maxSockets: 1 });
    assert.equal(source.url, 'https://example.com/m.bin');
    source.close();
    assert.throws(
      () => sourceFor('ftp://example.com/m.bin', { maxRedirects: 1, stallTimeoutMs: 1000, maxSockets: 1 }),
      (err: unknown) => err instanceof InvalidUrlError && /ftp:/.test(err.message) && /https?:\/\//.test(err.message),
    );
    assert.throws(() => sourceFor('nope', { maxRedirects: 1, stallTimeoutMs: 1000, maxSockets: 1 }), InvalidUrlError);
  });

  it('hashes a manifest the same way the engine checks it', () => {
    const bytes = Buffer.from('x'.repeat(40));
    const m = manifestOf(bytes, 16);
    assert.equal(m.pieces.length, 3);
    assert.equal(m.pieces[2], createHash('sha256').update('x'.repeat(8)).digest('hex'));
  });
});
