// An nginx origin for the plain-loopback benchmark (what curl and Loom race against), over
// HTTP and HTTPS, with its own config and pid file in a temporary directory.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../test/support/ports.js';
import { requireCommand } from '../lib.js';

export interface NginxOrigin {
  httpUrl: (file: string) => string;
  httpsUrl: (file: string) => string;
  stop: () => void;
}

export async function startNginx(root: string, tls: { cert: string; key: string }): Promise<NginxOrigin> {
  requireCommand('nginx', 'apt-get install nginx-light');
  const dir = mkdtempSync(join(tmpdir(), 'loom-nginx-'));
  const [httpPort, httpsPort] = [await freePort(), await freePort()];
  writeFileSync(join(dir, 'cert.pem'), tls.cert);
  writeFileSync(join(dir, 'key.pem'), tls.key);
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
daemon on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${httpPort};
    listen 127.0.0.1:${httpsPort} ssl;
    ssl_certificate ${dir}/cert.pem;
    ssl_certificate_key ${dir}/key.pem;
    root ${root};
  }
}
`,
  );
  execFileSync('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'pipe' });
  return {
    httpUrl: (file) => `http://127.0.0.1:${httpPort}/${file}`,
    httpsUrl: (file) => `https://localhost:${httpsPort}/${file}`,
    stop: () => {
      const pid = Number(readFileSync(join(dir, 'nginx.pid'), 'utf8'));
      process.kill(pid, 'SIGTERM');
    },
  };
}
