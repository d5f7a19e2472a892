// An HTTP/1.1 origin written on a bare TCP server, so a test can script each response to
// the byte: a Content-Range that lies, a body cut short, `Connection: close`, a keep-alive
// connection closed just as it is reused, bytes after the end of a body, an informational
// answer first, a chunked body. It serves one file with ranges; every request is recorded.
import net, { type AddressInfo } from 'node:net';

export interface RawRequestSeen {
  /** 1-based, over the server's life. */
  index: number;
  /** Which connection it came on (1-based), and its place on that connection (1-based). */
  connection: number;
  onConnection: number;
  /** [start, end) asked for; undefined without a Range header. */
  range: { start: number; end: number } | undefined;
  headers: Record<string, string>;
}

export type RawFault =
  /** Another head (its lines, without the blank line) and body than the file's. */
  | { kind: 'answer'; head: string[]; body: Buffer | string }
  /** The right head and this many body bytes, then the connection is destroyed. */
  | { kind: 'cut'; afterBytes: number }
  /** The connection is closed without an answer (a keep-alive timeout racing a reuse). */
  | { kind: 'drop' }
  /** The right answer with `Connection: close`, then the connection ends. */
  | { kind: 'close-after' }
  /** The right answer, then these bytes that no request asked for. */
  | { kind: 'trailing'; bytes: string }
  /** `103 Early Hints` first, then the right answer. */
  | { kind: 'informational' }
  /** The right range as a chunked body, without Content-Length. */
  | { kind: 'chunked' };

export class RawOrigin {
  readonly requests: RawRequestSeen[] = [];
  connections = 0;
  /** Body bytes written, over every response. */
  bodyBytes = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly content: Buffer,
    private readonly fault: (request: RawRequestSeen) => RawFault | undefined = () => undefined,
  ) {
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  url(path = '/file.bin'): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}${path}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: net.Socket): void {
    const connection = ++this.connections;
    let onConnection = 0;
    let pending = Buffer.alloc(0);
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      for (;;) {
        const end = pending.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = pending.subarray(0, end).toString('latin1');
        pending = pending.subarray(end + 4);
        const headers: Record<string, string> = {};
        for (const line of head.split('\r\n').slice(1)) {
          const colon = line.indexOf(':');
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        const match = /^bytes=(\d+)-(\d+)$/.exec(headers.range ?? '');
        const range = match ? { start: Number(match[1]), end: Number(match[2]) + 1 } : undefined;
        const request: RawRequestSeen = {
          index: this.requests.length + 1,
          connection,
          onConnection: ++onConnection,
          range,
          headers,
        };
        this.requests.push(request);
        this.answer(socket, request, this.fault(request));
      }
    });
  }

  private answer(socket: net.Socket, request: RawRequestSeen, fault: RawFault | undefined): void {
    const size = this.content.length;
    const { start, end } = request.range ?? { start: 0, end: size };
    const last = Math.min(end, size);
    const body = this.content.subarray(start, last);
    const head = (extra: string[] = [], length = true): string =>
      [
        request.range ? 'HTTP/1.1 206 Partial Content' : 'HTTP/1.1 200 OK',
        'ETag: "v1"',
        'Accept-Ranges: bytes',
        ...(request.range ? [`Content-Range: bytes ${start}-${last - 1}/${size}`] : []),
        ...(length ? [`Content-Length: ${body.length}`] : []),
        ...extra,
      ].join('\r\n') + '\r\n\r\n';
    const send = (bytes: Buffer): void => {
      this.bodyBytes += bytes.length;
      socket.write(bytes);
    };
    switch (fault?.kind) {
      case undefined:
        socket.write(head());
        send(body);
        return;
      case 'answer': {
        const bytes = Buffer.from(fault.body);
        socket.write(`${fault.head.join('\r\n')}\r\n\r\n`);
        send(bytes);
        return;
      }
      case 'cut':
        socket.write(head());
        send(body.subarray(0, fault.afterBytes));
        // Let the bytes leave before the connection goes.
        socket.end(() => socket.destroy());
        return;
      case 'drop':
        socket.destroy();
        return;
      case 'close-after':
        socket.write(head(['Connection: close']));
        send(body);
        socket.end();
        return;
      case 'trailing':
        socket.write(head());
        send(body);
        socket.write(fault.bytes);
        return;
      case 'informational':
        socket.write('HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n');
        socket.write(head());
        send(body);
        return;
      case 'chunked':
        socket.write(head(['Transfer-Encoding: chunked'], false));
        socket.write(`${body.length.toString(16)}\r\n`);
        send(body);
        socket.write('\r\n0\r\n\r\n');
        return;
    }
  }
}
