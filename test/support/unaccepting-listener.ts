// A TCP port that takes no more connections: a listener with a backlog of one, in a worker
// thread whose event loop is blocked so it never accepts, and its queue filled. The kernel
// then drops further SYNs, as a firewalled or overloaded host does, without leaving loopback.
import net from 'node:net';
import { Worker } from 'node:worker_threads';

const LISTENER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const server = net.createServer();
server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
  parentPort.postMessage(server.address().port);
  Atomics.wait(workerData, 0, 0); // blocks this thread: nothing is ever accepted
  server.close();
});
`;

export interface UnacceptingListener {
  port: number;
  close(): Promise<void>;
}

export async function unacceptingListener(): Promise<UnacceptingListener> {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(LISTENER, { eval: true, workerData: release });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  // Fill the accept queue (backlog + 1 on Linux) until a connection no longer completes.
  const fillers: net.Socket[] = [];
  for (;;) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    fillers.push(socket);
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 200);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!connected) break;
  }
  return {
    port,
    async close() {
      for (const socket of fillers) socket.destroy();
      Atomics.store(release, 0, 1);
      Atomics.notify(release, 0);
      await worker.terminate();
    },
  };
}
