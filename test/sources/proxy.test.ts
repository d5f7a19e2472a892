// Proxies from the environment, as curl reads them: HTTPS through a CONNECT tunnel, HTTP in
// absolute form, NO_PROXY hosts direct. Downloads go through a real forward proxy started
// here, which records what passed through it.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { OriginServer, type OriginOptions } from '../support/origin-server.js';
import { makeTestCa } from '../support/test-ca.js';
import { ConnectionRefusedError, LoomError, fetchFile, type FetchOptions } from '../../src/index.js';
import { bypassesProxy, parseNoProxy, proxyFor, proxySettingsFromEnv } from '../../src/sources/proxy.js';
import { ForwardProxy } from '../support/forward-proxy.js';
import { unacceptingListener } from '../support/unaccepting-listener.js';
import { randomContent, sha256OfFile, tempDir } from '../helpers/fixtures.js';

const SIZE = 2 * 1024 * 1024 + 777;
const FAST: FetchOptions = { workers: 4, chunkSize: 256 * 1024, maxRequestSize: 256 * 1024, retryBaseDelay: 5 };
const content = randomContent(SIZE);
const dir = tempDir();
const ca = makeTestCa();

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
async function proxy(options: ConstructorParameters<typeof ForwardProxy>[0] = {}): Promise<ForwardProxy> {
  const server = await new ForwardProxy(options).listen();
  closers.push(() => server.close());
  return server;
}

const PROXY_VARIABLES = ['HTTPS_PROXY', 'HTTP_PROXY', 'ALL_PROXY', 'NO_PROXY'].flatMap((v) => [v, v.toLowerCase()]);
const saved = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
/** Sets the proxy variables for one test (the others unset); restored after each test. */
function useEnv(env: Record<string, string>): void {
  for (const name of PROXY_VARIABLES) delete process.env[name];
  Object.assign(process.env, env);
}
afterEach(() => {
  for (const name of PROXY_VARIABLES) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

describe('proxies from the environment', () => {
  it('tunnels an https download through HTTPS_PROXY with CONNECT', async () => {
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const forward = await proxy();
    useEnv({ HTTPS_PROXY: forward.url() });
    const out = join(dir, 'tunnelled.bin');
    await fetchFile(server.url('/model.bin'), out, { ...FAST, caCertFiles: [ca.caCertFile] });
    assert.equal(await sha256OfFile(out), content.sha256);
    const authority = new URL(server.origin).host;
    assert.ok(forward.tunnels.length >= 1 && forward.tunnels.every((t) => t === authority), forward.tunnels.join());
    assert.ok(forward.bytesFromOrigin >= SIZE, 'every byte came through the tunnel');
  });

  it('sends http requests to HTTP_PROXY in absolute form (lower-case variable too)', async () => {
    const server = await origin();
    const forward = await proxy();
    useEnv({ http_proxy: forward.url() });
    const out = join(dir, 'forwarded.bin');
    await fetchFile(server.url('/model.bin'), out, FAST);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.ok(forward.forwarded.length >= 2);
    assert.ok(forward.forwarded.every((url) => url === server.url('/model.bin')));
    assert.equal(forward.forwarded.length, server.requests.length, 'every origin request came through the proxy');
    assert.ok(forward.bytesFromOrigin >= SIZE);
  });

  it('goes direct for a NO_PROXY host and through the proxy for others', async () => {
    const server = await origin();
    const forward = await proxy();
    useEnv({ HTTP_PROXY: forward.url(), NO_PROXY: 'example.com, 127.0.0.1' });
    const out = join(dir, 'direct.bin');
    await fetchFile(server.url('/model.bin'), out, FAST);
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(forward.forwarded.length + forward.tunnels.length, 0, 'the proxy saw nothing');
    assert.ok(server.requests.length >= 2);
  });

  it('sends the credentials of the proxy URL, and says so when the proxy refuses', async () => {
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const forward = await proxy({ requireAuthorization: `Basic ${Buffer.from('loom:s3cr:t').toString('base64')}` });
    useEnv({ HTTPS_PROXY: forward.url('loom:s3cr%3At') });
    const out = join(dir, 'authorized.bin');
    await fetchFile(server.url('/model.bin'), out, { ...FAST, caCertFiles: [ca.caCertFile] });
    assert.equal(await sha256OfFile(out), content.sha256);
    assert.equal(forward.refused, 0);

    useEnv({ HTTPS_PROXY: forward.url('loom:wrong') });
    const refusedOut = join(dir, 'refused.bin');
    await assert.rejects(
      fetchFile(server.url('/model.bin'), refusedOut, { ...FAST, caCertFiles: [ca.caCertFile] }),
      (err) => {
        assert.ok(err instanceof LoomError);
        assert.equal(err.code, 'LOOM_ERR_PROXY');
        assert.match(err.message, /407/);
        return true;
      },
    );
    assert.equal(forward.refused, 1, 'a refused tunnel is not retried');
    assert.equal(existsSync(refusedOut), false);
  });
});

describe('a proxy that is down', () => {
  it('says the proxy refused the connection, not the origin', async () => {
    const server = await origin();
    const down = await new ForwardProxy().listen();
    await down.close();
    useEnv({ HTTP_PROXY: down.url() });
    await assert.rejects(fetchFile(server.url('/model.bin'), join(dir, 'proxy-down.bin'), FAST), (err) => {
      assert.ok(err instanceof ConnectionRefusedError, String(err));
      assert.match(err.message, new RegExp(`connection refused by proxy ${new URL(down.url()).host}`));
      return true;
    });
    assert.equal(server.requests.length, 0);
  });

  it('gives up on a tunnel the proxy never opens within the stall timeout', { timeout: 30_000 }, async () => {
    const server = await origin({ tls: { key: ca.serverKey, cert: ca.serverCert } });
    const listener = await unacceptingListener();
    closers.push(() => listener.close());
    useEnv({ HTTPS_PROXY: `http://127.0.0.1:${listener.port}` });
    const options = { ...FAST, caCertFiles: [ca.caCertFile], stallTimeout: '300ms', retryAttempts: 1 };
    await assert.rejects(fetchFile(server.url('/model.bin'), join(dir, 'no-tunnel.bin'), options), (err) => {
      assert.ok(err instanceof LoomError, String(err));
      assert.match(err.message, /no tunnel through proxy 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ within 300 ms/);
      return true;
    });
  });
});

describe('NO_PROXY matching', () => {
  const noProxy = parseNoProxy('.internal.example, *.corp, registry:5000, 10.0.0.0/8, [::1], plain.host');
  const cases: Array<[string, boolean]> = [
    ['https://a.internal.example/x', true],
    ['https://internal.example/x', true],
    ['https://notinternal.example/x', false],
    ['https://build.corp/x', true],
    ['http://registry:5000/x', true],
    ['http://registry/x', false],
    ['http://10.1.2.3:8080/x', true],
    ['http://11.1.2.3/x', false],
    ['http://[::1]:9000/x', true],
    ['https://plain.host/x', true],
    ['https://sub.plain.host/x', true],
    ['https://plain.hostile/x', false],
  ];
  for (const [url, expected] of cases) {
    it(`${expected ? 'bypasses' : 'proxies'} ${url}`, () => {
      assert.equal(bypassesProxy(new URL(url), noProxy), expected);
    });
  }

  it('bypasses everything with *', () => {
    assert.equal(bypassesProxy(new URL('https://anything.example/'), parseNoProxy('*')), true);
  });

  it('reads lower case before upper case, defaults the scheme to http and the port to 1080', () => {
    const settings = proxySettingsFromEnv({
      https_proxy: 'proxy.lower:3128',
      HTTPS_PROXY: 'http://proxy.upper:3128',
      HTTP_PROXY: 'http://plain.proxy',
      NO_PROXY: 'localhost',
    });
    assert.equal(settings.https?.href, 'http://proxy.lower:3128/');
    assert.equal(settings.http?.href, 'http://plain.proxy:1080/');
    assert.equal(proxyFor(new URL('https://localhost/x'), settings), undefined);
    assert.equal(proxyFor(new URL('https://hub.example/x'), settings)?.host, 'proxy.lower:3128');
  });

  it('refuses a proxy scheme it does not speak, naming the variable', () => {
    assert.throws(
      () => proxySettingsFromEnv({ ALL_PROXY: 'socks5://proxy:1080' }),
      (err) => {
        assert.ok(err instanceof LoomError);
        assert.equal(err.code, 'LOOM_ERR_USAGE');
        assert.match(err.message, /ALL_PROXY.*socks5:/);
        return true;
      },
    );
  });
});
