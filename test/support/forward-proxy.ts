// A small forward proxy for tests, as tinyproxy or squid would act: CONNECT tunnels for
// https URLs, absolute-form requests forwarded for http URLs. It records what passed
// through it, so a test can assert that the bytes went through the proxy, or around it.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface ForwardProxyOptions {
  /** Answer 407 unless the request carries this Proxy-Authorization value. */
  requireAuthorization?: string;
}

export class ForwardProxy {
  private readonly server: http.Server;
  private readonly sockets = new Set<Duplex>();
  private port = 0;
  /** host:port of every CONNECT tunnel opened. */
  readonly tunnels: string[] = [];
  /** Absolute URL of every request forwarded. */
  readonly forwarded: string[] = [];
  /** Requests refused for missing credentials. */
  refused = 0;
  /** Bytes carried from the origin to the client, tunnels and forwards together. */
  bytesFromOrigin = 0;

  constructor(private readonly options: ForwardProxyOptions = {}) {
    this.server = http.createServer((req, res) => this.forward(req, res));
    this.server.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => this.tunnel(req, client, head));
    this.server.on('connection', (socket: Socket) => this.track(socket));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** http://127.0.0.1:port, with `credentials` (user:password) when given. */
  url(credentials?: string): string {
    return `http://${credentials ? `${credentials}@` : ''}127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(socket: Duplex): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
  }

  private authorized(req: IncomingMessage): boolean {
    const expected = this.options.requireAuthorization;
    if (expected === undefined || req.headers['proxy-authorization'] === expected) return true;
    this.refused++;
    return false;
  }

  private tunnel(req: IncomingMessage, client: Duplex, head: Buffer): void {
    if (!this.authorized(req)) {
      client.end(
        'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n',
      );
      return;
    }
    const authority = req.url ?? '';
    this.tunnels.push(authority);
    const [host, port] = splitAuthority(authority);
    const upstream = net.connect(port, host);
    this.track(upstream);
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.on('data', (chunk: Buffer) => (this.bytesFromOrigin += chunk.length));
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.once('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n'));
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    if (!this.authorized(req)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic', 'content-length': 0 }).end();
      return;
    }
    const target = req.url ?? '';
    if (!/^http:\/\//.test(target)) {
      res.writeHead(400, { 'content-length': 0 }).end();
      return;
    }
    this.forwarded.push(target);
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const upstream = http.request(target, { method: req.method, headers, agent: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.on('data', (chunk: Buffer) => (this.bytesFromOrigin += chunk.length));
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  }
}

function splitAuthority(authority: string): [string, number] {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(authority);
  return match ? [match[1]!, Number(match[2])] : [authority, 443];
}
