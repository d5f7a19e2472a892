// Redirects and the user's headers: a redirect to another scheme, host or port keeps none
// of them (credentials hide in any header name), and an https -> http downgrade is refused
// unless allowed. Real origins on loopback; the origin records the headers it received.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { makeTestCa } from '../support/test-ca.js';
import { LoomError, fetchFile, type FetchOptions } from '../../src/index.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const content = randomContent(1024 * 1024 + 99);
const FAST: FetchOptions = { workers: 4, chunkSize: 256 * 1024, maxRequestSize: 256 * 1024, retryBaseDelay: 5 };
const USER_HEADERS = { Authorization: 'Bearer secret', Cookie: 'session=1', 'X-Api-Key': 'key-123' };
const dir = tempDir();

const servers: OriginServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});
async function origin(options: OriginOptions = {}): Promise<OriginServer> {
  const server = await new OriginServer(options).listen();
  servers.push(server);
  return server;
}

function userHeadersOf(server: OriginServer): string[] {
  return server.requests.flatMap((r) =>
    ['authorization', 'cookie', 'x-api-key'].filter((name) => r.headers[name] !== undefined),
  );
}

describe('redirects and user headers', () => {
  it('sends no user header (X-Api-Key, Cookie, Authorization) to another port on the same host', async () => {
    const cdn = await origin();
    cdn.setFile('/blob', content.bytes);
    const hub = await origin();
    hub.redirect('/model.bin', cdn.url('/blob?sig=1'));
    const out = join(dir, 'other-port.bin');
    await fetchFile(hub.url('/model.bin'), out, { ...FAST, headers: USER_HEADERS });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(hub.requests[0]!.headers['x-api-key'], 'key-123', 'the named origin gets the headers');
    assert.ok(cdn.requests.length >= 2);
    assert.deepEqual(userHeadersOf(cdn), [], 'the redirect target got none of them');
  });

  it('sends no user header to another host name', async () => {
    const cdn = await origin({ hostname: 'localhost' });
    cdn.setFile('/blob', content.bytes);
    const hub = await origin();
    hub.redirect('/model.bin', cdn.url('/blob'));
    const out = join(dir, 'other-host.bin');
    await fetchFile(hub.url('/model.bin'), out, { ...FAST, headers: USER_HEADERS });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.deepEqual(userHeadersOf(cdn), []);
  });

  it('keeps every user header on a redirect within the same origin', async () => {
    const server = await origin();
    server.setFile('/resolved/model.bin', content.bytes);
    server.redirect('/model.bin', '/resolved/model.bin');
    const out = join(dir, 'same-origin.bin');
    await fetchFile(server.url('/model.bin'), out, { ...FAST, headers: USER_HEADERS });
    assert.equal(await sha256OfFile(out), content.sha256);
    for (const r of server.requests) {
      assert.equal(r.headers['x-api-key'], 'key-123');
      assert.equal(r.headers.authorization, 'Bearer secret');
    }
  });

  it('refuses an https -> http redirect with LOOM_ERR_REDIRECT and writes nothing', async () => {
    const ca = makeTestCa();
    const plain = await origin();
    plain.setFile('/blob', content.bytes);
    const secure = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    secure.redirect('/model.bin', plain.url('/blob'));
    const out = join(dir, 'downgrade.bin');
    await assert.rejects(
      fetchFile(secure.url('/model.bin'), out, { ...FAST, caCertFiles: [ca.caCertFile], headers: USER_HEADERS }),
      (err) => {
        assert.ok(err instanceof LoomError);
        assert.equal(err.code, 'LOOM_ERR_REDIRECT');
        assert.match(err.message, /drops HTTPS/);
        assert.match(err.message, /allowHttpsDowngrade/);
        return true;
      },
    );
    assert.equal(plain.requests.length, 0, 'nothing was sent in clear text');
    assert.equal(secure.requests.length, 1, 'a refused redirect is not retried');
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.part`), false);

    // Allowed: it follows, and still sends none of the user's headers in clear text.
    const allowed = join(dir, 'downgrade-allowed.bin');
    await fetchFile(secure.url('/model.bin'), allowed, {
      ...FAST,
      caCertFiles: [ca.caCertFile],
      headers: USER_HEADERS,
      allowHttpsDowngrade: true,
    });
    assert.equal(await sha256OfFile(allowed), content.sha256);
    assert.ok(plain.requests.length >= 2);
    assert.deepEqual(userHeadersOf(plain), []);
  });

  it('rejects a non-boolean allowHttpsDowngrade before any request', async () => {
    await assert.rejects(
      fetchFile('http://127.0.0.1:1/x', join(dir, 'x'), { allowHttpsDowngrade: 'yes' as unknown as boolean }),
      (err) => err instanceof LoomError && err.code === 'LOOM_ERR_USAGE',
    );
  });
});
