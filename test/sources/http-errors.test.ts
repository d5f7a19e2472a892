// Failures that cannot heal fail at once and say why: an untrusted certificate, a host that
// does not resolve, a 4xx other than 408/425/429. A refused connection says so and carries
// a small retry budget; a host that takes no connection is given up within the stall timeout.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { makeTestCa } from '../support/test-ca.js';
import {
  ConnectionRefusedError,
  HostNotFoundError,
  HttpStatusError,
  LoomError,
  TlsError,
  fetchFile,
  type FetchOptions,
} from '../../src/index.js';
import { retryAdvice } from '../../src/sources/http-retry.js';
import { unacceptingListener } from '../support/unaccepting-listener.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const content = randomContent(512 * 1024 + 5);
/** Retries as the defaults make them (six attempts): what fails at once shows it. */
const OPTIONS: FetchOptions = { workers: 2, chunkSize: 128 * 1024, maxRequestSize: 128 * 1024, retryBaseDelay: 5 };
const dir = tempDir();

const closers: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(closers.map((close) => close()));
});
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  closers.push(() => server.close());
  server.setFile('/model.bin', content.bytes);
  return server;
}

/** A loopback port where nothing listens. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('errors that cannot heal', () => {
  it('fails at once on an untrusted certificate, saying how to trust it', async () => {
    const ca = makeTestCa();
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const out = join(dir, 'untrusted.bin');
    await assert.rejects(fetchFile(server.url('/model.bin'), out, { ...OPTIONS, retryBaseDelay: '10s' }), (err) => {
      assert.ok(err instanceof TlsError, String(err));
      assert.equal(err.code, 'LOOM_ERR_TLS');
      assert.match(err.message, /certificate of 127\.0\.0\.1:\d+ not trusted/);
      assert.match(err.message, /pass --ca-cert or NODE_EXTRA_CA_CERTS/);
      assert.deepEqual(retryAdvice(err), { retryable: false });
      return true;
    });
    assert.equal(existsSync(out), false);
  });

  it('fails at once on a host that does not resolve', async () => {
    const out = join(dir, 'nowhere.bin');
    await assert.rejects(
      fetchFile('http://loom-test.invalid/model.bin', out, { ...OPTIONS, retryBaseDelay: '10s' }),
      (err) => {
        assert.ok(err instanceof HostNotFoundError, String(err));
        assert.equal(err.code, 'LOOM_ERR_HOST_NOT_FOUND');
        assert.match(err.message, /host loom-test\.invalid does not resolve/);
        return true;
      },
    );
    assert.equal(existsSync(`${out}.part`), false);
  });

  it('fails at once on a 403, and retries a 425 Too Early', async () => {
    const forbidden = await origin({ fault: () => ({ kind: 'status', status: 403 }) });
    await assert.rejects(
      fetchFile(forbidden.url('/model.bin'), join(dir, 'forbidden.bin'), { ...OPTIONS, retryBaseDelay: '10s' }),
      (err) => err instanceof HttpStatusError && err.status === 403 && !err.retryable,
    );
    assert.equal(forbidden.requests.length, 1);

    const early = await origin({ fault: (ctx) => (ctx.index <= 2 ? { kind: 'status', status: 425 } : undefined) });
    const out = join(dir, 'early.bin');
    const result = await fetchFile(early.url('/model.bin'), out, OPTIONS);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(result.stats.retries, 2);
  });

  it('says a refused connection is refused, with a budget of a few quick tries', async () => {
    const port = await closedPort();
    const out = join(dir, 'refused.bin');
    await assert.rejects(
      fetchFile(`http://127.0.0.1:${port}/model.bin`, out, { ...OPTIONS, retryAttempts: 1 }),
      (err) => {
        // The engine wraps what it gave up on; the typed error is the cause or the error itself.
        const refused = err instanceof ConnectionRefusedError ? err : (err as Error).cause;
        assert.ok(refused instanceof ConnectionRefusedError, String(err));
        assert.equal(refused.code, 'LOOM_ERR_CONN_REFUSED');
        assert.match(refused.message, new RegExp(`connection refused by 127\\.0\\.0\\.1:${port}`));
        assert.deepEqual(retryAdvice(refused), { retryable: true, maxAttempts: 3 });
        return true;
      },
    );
  });
});

describe('connect timeout', () => {
  it(
    'gives up on a host that takes no connection within the stall timeout, not the kernel two minutes',
    {
      timeout: 30_000,
    },
    async () => {
      const listener = await unacceptingListener();
      closers.push(() => listener.close());
      const out = join(dir, 'syn-dropped.bin');
      await assert.rejects(
        fetchFile(`http://127.0.0.1:${listener.port}/model.bin`, out, {
          ...OPTIONS,
          stallTimeout: '300ms',
          retryAttempts: 2,
        }),
        (err) => {
          assert.ok(err instanceof LoomError, String(err));
          assert.match(err.message, new RegExp(`no connection to 127\\.0\\.0\\.1:${listener.port} within 300 ms`));
          return true;
        },
      );
      assert.equal(existsSync(out), false);
    },
  );
});
