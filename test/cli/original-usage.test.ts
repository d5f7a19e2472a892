// The original tool's README, line for line, with `loom` in place of `cargo run --release --`:
// no subcommand, --url/--out/--workers, --serve keeping the registry up on port 3000, and the
// curl lines that register and locate a node. The lines are read from our README and run by
// bash, with a `loom` on the PATH that is the built binary.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { collect, LOOM_BIN, randomContent, REPO_ROOT, sha256OfFile, tempDir, waitFor } from '../helpers/fixtures.js';
import { spawn } from 'node:child_process';

const run = promisify(execFile);
const dir = tempDir();
const content = randomContent(4 * 1024 * 1024);
const servers: OriginServer[] = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function origin(): Promise<OriginServer> {
  const server = await new OriginServer().listen();
  server.setFile('/llama-2-7b.gguf', content.bytes);
  servers.push(server);
  return server;
}

/** The shell lines of the README's "The original tool's usage" block. */
function readmeLines(): string[] {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf("### The original tool's usage"));
  const block = /```sh\n([\s\S]*?)```/.exec(section);
  assert.ok(block, "the README has the original tool's usage block");
  return block[1]!.trim().split('\n');
}

// `loom` on the PATH, as `npm install -g` would put it.
const binDir = tempDir('loom-bin-');
writeFileSync(join(binDir, 'loom'), `#!/bin/sh\nexec "${process.execPath}" "${LOOM_BIN}" "$@"\n`);
chmodSync(join(binDir, 'loom'), 0o755);
const cacheDir = tempDir('loom-cache-');
const env = { ...process.env, PATH: `${binDir}:${process.env.PATH ?? ''}`, LOOM_CACHE_DIR: cacheDir };

/** A README line for this test: the example URL is the test origin's, port 3000 is `port`. */
function localise(line: string, url: string, port?: number): string {
  let out = line.replace(/https:\/\/example\.com\/\S+/g, url);
  if (port !== undefined) out = out.replaceAll('localhost:3000', `localhost:${port}`);
  return out;
}

function bash(line: string, extraEnv: NodeJS.ProcessEnv = {}) {
  return run('bash', ['-c', line], { cwd: dir, env: { ...env, ...extraEnv } });
}

describe("the original tool's usage", () => {
  const lines = readmeLines();
  const fetchLine = lines.find((l) => l.startsWith('loom --url') && l.includes('--workers 16'))!;
  const serveLine = lines.find((l) => l.startsWith('loom --url') && l.endsWith('--serve'))!;
  const curlLines = lines.filter((l) => l.startsWith('curl '));

  it('downloads with no subcommand: loom --url URL --out model.gguf --workers 16', async () => {
    assert.ok(fetchLine, 'the README has the fetch line');
    const server = await origin();
    const result = await bash(localise(fetchLine, server.url('/llama-2-7b.gguf')));
    assert.match(result.stderr, /model\.gguf: .* from the origin/);
    assert.equal(await sha256OfFile(join(dir, 'model.gguf')), content.sha256);
  });

  it('--serve downloads, then keeps the registry up with this node registered, and the curl lines work', async () => {
    assert.ok(serveLine, 'the README has the --serve line');
    assert.equal(curlLines.length, 2);
    const server = await origin();
    // Port 3000 may be taken on a test machine: the test lets the system choose one.
    const child = spawn('bash', ['-c', `exec ${localise(serveLine, server.url('/llama-2-7b.gguf'))}`], {
      cwd: dir,
      env: { ...env, LOOM_SERVE_LISTEN: '127.0.0.1:0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const done = collect(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const port = Number(
        (
          await waitFor(
            'the registry banner',
            () => /serving the registry on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr) ?? undefined,
          )
        )[1],
      );
      assert.equal(await sha256OfFile(join(dir, 'model.gguf')), content.sha256);

      // The node that downloaded registered what it downloaded.
      const own = await bash(`curl -s http://localhost:${port}/locate/model.gguf`);
      assert.deepEqual(JSON.parse(own.stdout), { model: 'model.gguf', nodes: [`http://127.0.0.1:${port}`] });

      const registered = await bash(localise(curlLines[0]!, '', port));
      assert.equal((JSON.parse(registered.stdout) as { ok: boolean }).ok, true);
      const located = await bash(localise(curlLines[1]!, '', port));
      // The node comes back as registered (the control plane used to rewrite it as "http://node1").
      assert.deepEqual(JSON.parse(located.stdout), { model: 'llama-2-7b', nodes: ['node1'] });
    } finally {
      child.kill('SIGINT');
    }
    const exit = await done;
    assert.equal(exit.code, 0, exit.stderr);
  });

  it('--serve binds its port before the download and answers 503 until the download is done', async () => {
    const slow = await new OriginServer({ rateLimitBytesPerSecond: 1024 * 1024 }).listen();
    servers.push(slow);
    slow.setFile('/llama-2-7b.gguf', content.bytes);
    const out = join(dir, 'slow.gguf');
    const child = spawn(
      process.execPath,
      [LOOM_BIN, '--url', slow.url('/llama-2-7b.gguf'), '--out', out, '--workers', '1', '--serve'],
      {
        env: { ...env, LOOM_SERVE_LISTEN: '127.0.0.1:0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const done = collect(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const base = (
        await waitFor('the port to be bound', () => /registry bound to (http:\/\/\S+);/.exec(stderr) ?? undefined)
      )[1]!;
      const early = await fetch(`${base}/locate/slow.gguf`);
      assert.equal(early.status, 503);
      assert.equal(existsSync(out), false, 'the download is not done yet');
      await waitFor('the registry to serve', () => stderr.includes('serving the registry'), 30_000);
      const late = await fetch(`${base}/locate/slow.gguf`);
      assert.deepEqual(await late.json(), { model: 'slow.gguf', nodes: [base] });
      assert.equal(await sha256OfFile(out), content.sha256);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal((await done).code, 0);
  });

  /** `loom --url … --serve ARGS` until its registry serves: its base URL and stderr; stop() ends it. */
  async function serving(args: string[]) {
    const server = await origin();
    const child = spawn(
      process.execPath,
      [LOOM_BIN, '--url', server.url('/llama-2-7b.gguf'), '--out', join(dir, 'adv.gguf'), '--serve', ...args],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const done = collect(child);
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const port = Number(
      (
        await waitFor(
          'the registry to serve',
          () => /serving the registry on http:\/\/\S+:(\d+)/.exec(stderr) ?? undefined,
        )
      )[1],
    );
    return {
      base: `http://127.0.0.1:${port}`,
      port,
      stderr: () => stderr,
      stop: async () => {
        child.kill('SIGINT');
        return done;
      },
    };
  }

  it('--serve registers the --advertise URL; legacy registrations live as long as the process', async () => {
    const node = await serving(['--listen', '127.0.0.1:0', '--advertise', 'http://node-a.example:3000/']);
    try {
      const own = (await (await fetch(`${node.base}/locate/adv.gguf`)).json()) as { nodes: string[] };
      assert.deepEqual(own.nodes, ['http://node-a.example:3000']);
      const registered = await fetch(`${node.base}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ node: 'node1', model: 'm' }),
      });
      assert.deepEqual(await registered.json(), { ok: true, node: 'node1', model: 'm', ttlSeconds: null });
      assert.doesNotMatch(node.stderr(), /warning/);
    } finally {
      assert.equal((await node.stop()).code, 0);
    }
  });

  it('--serve on a wildcard address registers the host name, with a warning; --legacy-ttl sets an expiry', async () => {
    const node = await serving(['--listen', '0.0.0.0:0', '--legacy-ttl', '10m']);
    try {
      const advertised = `http://${hostname()}:${node.port}`;
      assert.match(
        node.stderr(),
        new RegExp(
          `loom: warning: listening on 0\\.0\\.0\\.0: advertising ${advertised.replace(/\./g, '\\.')} to other nodes; pass --advertise URL`,
        ),
      );
      assert.match(node.stderr(), new RegExp(`registry bound to http://0\\.0\\.0\\.0:${node.port};`));
      const own = (await (await fetch(`${node.base}/locate/adv.gguf`)).json()) as { nodes: string[] };
      assert.deepEqual(own.nodes, [advertised], 'not the loopback address');
      const registered = await fetch(`${node.base}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ node: 'node1', model: 'm' }),
      });
      assert.equal(((await registered.json()) as { ttlSeconds: number }).ttlSeconds, 600);
    } finally {
      assert.equal((await node.stop()).code, 0);
    }
  });

  it('--advertise and --legacy-ttl without --serve are usage errors naming the flag', async () => {
    for (const [flag, value] of [
      ['--advertise', 'http://a:1'],
      ['--legacy-ttl', '5m'],
    ] as const) {
      const result = await collect(
        spawn(process.execPath, [LOOM_BIN, '--url', 'http://127.0.0.1:1/x', '--out', join(dir, 'x'), flag, value], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, new RegExp(`^loom: error: ${flag} goes with --serve`));
    }
    const bad = await collect(
      spawn(process.execPath, [LOOM_BIN, '--url', 'http://127.0.0.1:1/x', '--serve', '--advertise', 'node1:3000'], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /option '--advertise <url>' argument 'node1:3000' is invalid. must be an http or https URL/,
    );
  });

  it('--serve on a busy port fails with exit 7 before fetching a byte', async () => {
    const server = await origin();
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const out = join(dir, 'busy.gguf');
      const child = spawn(
        process.execPath,
        [LOOM_BIN, '--url', server.url('/llama-2-7b.gguf'), '--out', out, '--serve', '--listen', `127.0.0.1:${port}`],
        { env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const result = await collect(child);
      assert.equal(result.code, 7, result.stderr);
      assert.match(result.stderr, new RegExp(`loom: error: 127\\.0\\.0\\.1:${port} is already in use`));
      assert.equal(server.requests.length, 0, 'the origin was not asked for anything');
      assert.equal(existsSync(out), false);
    } finally {
      blocker.close();
    }
  });

  it("--serve listens on the original tool's port 3000 by default", async () => {
    const server = await origin();
    // Hold port 3000 (or find it already held): loom must then name it and stop.
    const blocker: Server = createServer();
    const held = await new Promise<boolean>((resolve) => {
      blocker.once('error', () => resolve(false));
      blocker.listen(3000, '127.0.0.1', () => resolve(true));
    });
    try {
      const child = spawn(
        process.execPath,
        [LOOM_BIN, '--url', server.url('/llama-2-7b.gguf'), '--out', join(dir, 'p3000.gguf'), '--serve'],
        { env: { ...env, LOOM_SERVE_LISTEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const result = await collect(child);
      assert.equal(result.code, 7, result.stderr);
      assert.match(result.stderr, /127\.0\.0\.1:3000 is already in use/);
      assert.equal(server.requests.length, 0);
    } finally {
      if (held) blocker.close();
    }
  });
});
