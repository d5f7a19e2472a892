// Proxies as curl reads them from the environment: https_proxy / HTTPS_PROXY for https URLs,
// http_proxy / HTTP_PROXY for http URLs, all_proxy / ALL_PROXY for both (lower case wins),
// and no_proxy / NO_PROXY for the hosts that go direct. HTTPS goes through a CONNECT tunnel,
// so the proxy sees only host and port; HTTP is sent to the proxy in absolute form.
// Written here rather than taken from https-proxy-agent: that agent answers a refused
// CONNECT by replaying the proxy's response as if the origin had sent it (a proxy's 407
// would read as the origin's), hides the proxy socket from the connect timeout, and would
// bring four packages for what is one CONNECT request.
import http from 'node:http';
import type https from 'node:https';
import { BlockList, isIP, type Socket } from 'node:net';
import type tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { ProxyError, StallError, UsageError } from '../core/errors.js';

export interface ProxySettings {
  /** Proxy for https URLs. */
  https: URL | undefined;
  /** Proxy for http URLs. */
  http: URL | undefined;
  /** Hosts that go direct. */
  noProxy: NoProxy;
}

interface NoProxyEntry {
  /** Lower-case host name or IP literal, without brackets or a leading dot. */
  host: string;
  /** Only this port when given. */
  port: number | undefined;
}

interface NoProxy {
  all: boolean;
  entries: NoProxyEntry[];
  /** IP ranges given in CIDR form. */
  subnets: BlockList;
}

type Env = Record<string, string | undefined>;

/** The variable's value, lower case first as curl reads it, with the name it came from. */
function readEnv(env: Env, name: string): { value: string; name: string } | undefined {
  for (const variable of [name.toLowerCase(), name.toUpperCase()]) {
    const value = env[variable]?.trim();
    if (value) return { value, name: variable };
  }
  return undefined;
}

/** Parses a proxy URL as curl does: no scheme means http://, no port means 1080. */
export function parseProxyUrl(value: string, variable: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`${variable} is not a valid proxy URL: "${value}"`, {
      hint: 'give it as http://host:port',
    });
  }
  if (url.protocol !== 'http:') {
    throw new UsageError(`${variable} uses the unsupported proxy scheme ${url.protocol}`, {
      hint: 'Loom speaks to http:// proxies (HTTPS URLs still go through them encrypted, by CONNECT)',
    });
  }
  if (!url.port) url.port = '1080';
  return url;
}

function bare(host: string): string {
  return host.toLowerCase().replace(/^\[|\]$/g, '');
}

export function parseNoProxy(value: string | undefined): NoProxy {
  const noProxy: NoProxy = { all: false, entries: [], subnets: new BlockList() };
  for (const raw of (value ?? '').split(/[\s,]+/)) {
    if (!raw) continue;
    if (raw === '*') {
      noProxy.all = true;
      continue;
    }
    const cidr = /^([^/]+)\/(\d{1,3})$/.exec(raw);
    const family = cidr ? isIP(bare(cidr[1]!)) : 0;
    if (cidr && family) {
      noProxy.subnets.addSubnet(bare(cidr[1]!), Number(cidr[2]), family === 6 ? 'ipv6' : 'ipv4');
      continue;
    }
    // host, .host, *.host, host:port, [v6]:port, a bare v6 address
    const hostPort = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw);
    const host = hostPort && !isIP(raw) ? hostPort[1]! : raw;
    const port = hostPort && !isIP(raw) ? Number(hostPort[2]) : undefined;
    noProxy.entries.push({ host: bare(host).replace(/^\*?\./, ''), port });
  }
  return noProxy;
}

/** The proxy settings in `env` (default: this process's environment). */
export function proxySettingsFromEnv(env: Env = process.env): ProxySettings {
  const all = readEnv(env, 'all_proxy');
  const https = readEnv(env, 'https_proxy') ?? all;
  const http = readEnv(env, 'http_proxy') ?? all;
  return {
    https: https && parseProxyUrl(https.value, https.name),
    http: http && parseProxyUrl(http.value, http.name),
    noProxy: parseNoProxy(readEnv(env, 'no_proxy')?.value),
  };
}

export function defaultPort(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
}

/** True when NO_PROXY sends `url` direct: `*`, the host or a parent domain, an IP range. */
export function bypassesProxy(url: URL, noProxy: NoProxy): boolean {
  if (noProxy.all) return true;
  const host = bare(url.hostname);
  const port = defaultPort(url);
  const family = isIP(host);
  if (family && noProxy.subnets.check(host, family === 6 ? 'ipv6' : 'ipv4')) return true;
  return noProxy.entries.some(
    (entry) =>
      (entry.port === undefined || entry.port === port) &&
      (host === entry.host || (!family && host.endsWith(`.${entry.host}`))),
  );
}

/** The proxy `url` goes through, or undefined for a direct connection. */
export function proxyFor(url: URL, settings: ProxySettings): URL | undefined {
  const proxy = url.protocol === 'https:' ? settings.https : settings.http;
  return proxy && !bypassesProxy(url, settings.noProxy) ? proxy : undefined;
}

/** Host and port to open a TCP connection to the proxy. */
export function proxyAddress(proxy: URL): { host: string; port: number } {
  return { host: bare(proxy.hostname), port: Number(proxy.port) };
}

/** `Proxy-Authorization` for credentials in the proxy URL (http://user:pass@proxy). */
export function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username && !proxy.password) return undefined;
  const credentials = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return `Basic ${Buffer.from(credentials).toString('base64')}`;
}

/** Opens a CONNECT tunnel to `authority` (host:port); rejects on a refusal or after the timeout. */
export function openTunnel(proxy: URL, authority: string, timeoutMs: number): Promise<Socket> {
  const auth = proxyAuthorization(proxy);
  return new Promise((resolve, reject) => {
    const req = http.request({
      ...proxyAddress(proxy),
      method: 'CONNECT',
      path: authority,
      headers: { host: authority, ...(auth && { 'proxy-authorization': auth }) },
      agent: false,
    });
    // Covers the TCP connect to the proxy and the proxy's own connect to the origin.
    const timer = setTimeout(() => {
      req.destroy(new StallError(`no tunnel through proxy ${proxy.host} to ${authority} within ${timeoutMs} ms`));
    }, timeoutMs);
    req.once('connect', (res, socket, head) => {
      clearTimeout(timer);
      const status = res.statusCode ?? 0;
      if (status < 200 || status >= 300) {
        socket.destroy();
        reject(
          new ProxyError(
            `proxy ${proxy.host} answered CONNECT ${authority} with ${status} ${res.statusMessage ?? ''}`.trim(),
            {
              status,
              retryable: status >= 500,
              hint:
                status === 407 ? 'put the credentials in the proxy URL: http://user:password@proxy:port' : undefined,
            },
          ),
        );
        return;
      }
      // A TLS server speaks only after the ClientHello: nothing may follow the proxy's answer.
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.once('response', (res) => {
      clearTimeout(timer);
      res.resume();
      reject(new ProxyError(`proxy ${proxy.host} did not open a tunnel (HTTP ${res.statusCode ?? 0})`, {}));
    });
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

/**
 * An https.Agent whose connections are TLS over a CONNECT tunnel through `proxy`. Sockets
 * are pooled per origin as usual; Node's agent accepts a connection given by callback.
 */
export function tunnelAgent(
  httpsModule: typeof https,
  tlsModule: typeof tls,
  proxy: URL,
  options: https.AgentOptions,
  connectTimeoutMs: number,
): https.Agent {
  class TunnelAgent extends httpsModule.Agent {
    override createConnection(
      opts: https.RequestOptions,
      callback?: (err: Error | null, stream: Duplex) => void,
    ): Duplex | null | undefined {
      const host = opts.host ?? opts.hostname ?? 'localhost';
      const authority = `${isIP(host) === 6 ? `[${host}]` : host}:${opts.port ?? 443}`;
      openTunnel(proxy, authority, connectTimeoutMs).then(
        (socket) => callback?.(null, tlsModule.connect({ ...(opts as tls.ConnectionOptions), socket })),
        (err: unknown) => callback?.(err instanceof Error ? err : new Error(String(err)), undefined as never),
      );
      return undefined;
    }
  }
  return new TunnelAgent(options);
}
