// Mistakes in what the user types (flags, environment variables, paths) are usage errors
// (exit 2) said before any request, and with --json they print the same {"ok":false,…}
// document every other failure prints.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { OriginServer } from '../support/origin-server.js';
import { randomContent, runLoom } from '../helpers/fixtures.js';

const content = randomContent(256 * 1024);
let server: OriginServer | undefined;
after(() => server?.close());

async function origin(): Promise<OriginServer> {
  server ??= await new OriginServer().listen();
  server.setFile('/model.bin', content.bytes);
  server.resetStats();
  return server;
}

/** stdout as the one JSON failure document --json promises; fails the test otherwise. */
function jsonFailure(stdout: string): { code: string; message: string } {
  const doc = JSON.parse(stdout) as { ok: boolean; error: { code: string; message: string } };
  assert.equal(doc.ok, false);
  return doc.error;
}

describe('--json on a command line the flag parser refuses', () => {
  const cases: { args: (url: string) => string[]; message: RegExp }[] = [
    { args: (url) => ['fetch', url, '--json', '-o', 'x', '-w', '0'], message: /workers.*whole number from 1/ },
    { args: (url) => ['fetch', url, '--json', '-o', 'x', '--bogus'], message: /unknown option '--bogus'/ },
    { args: (url) => ['fetch', url, '-o', 'x', '--stall-timeout', '-5', '--json'], message: /stall-timeout/ },
    { args: (url) => [url, '--json', '--bogus'], message: /unknown option '--bogus'/ },
    { args: () => ['pull', 'org/model', '--repo-type', 'widget', '--json'], message: /one of model, dataset, space/ },
    { args: () => ['cache', 'gc', '--json'], message: /--max-size/ },
    { args: () => ['cache', 'rm', '--json'], message: /missing required argument/ },
  ];
  for (const { args, message } of cases) {
    it(`prints {"ok":false} with LOOM_ERR_USAGE and exits 2: loom ${args('URL').join(' ')}`, async () => {
      const origin_ = await origin();
      const run = await runLoom(args(origin_.url('/model.bin')));
      assert.equal(run.code, 2, run.stderr);
      const error = jsonFailure(run.stdout);
      assert.equal(error.code, 'LOOM_ERR_USAGE');
      assert.match(error.message, message);
      assert.match(run.stderr, /^loom: error: /, 'stderr still says it for a person');
      assert.equal(origin_.requests.length, 0);
    });
  }

  it('prints nothing on stdout without --json', async () => {
    const run = await runLoom(['cache', 'gc']);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
  });
});
