// The README's error table is the documentation of every code: this keeps the two in step.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CLASSES, ERROR_CODES, EXIT } from '../../src/core/errors.js';
import { REPO_ROOT } from '../helpers/fixtures.js';

describe('error codes', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const rows = new Map(
    [...readme.matchAll(/^\| `(LOOM_ERR_[A-Z0-9_]+)`\s*\| (\d+)\s*\| (\d+)\s*\|/gm)].map((m) => [
      m[1]!,
      { exit: Number(m[2]), http: Number(m[3]) },
    ]),
  );

  it('lists exactly the codes the code defines, each once', () => {
    assert.deepEqual([...rows.keys()].sort(), [...ERROR_CODES].sort());
    assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length);
  });

  it('documents the exit code and HTTP status each class really has', () => {
    for (const ErrorClass of ERROR_CLASSES) {
      const error = new ErrorClass('probe', {});
      const row = rows.get(error.code);
      assert.ok(row, `${error.code} is in the README`);
      assert.equal(row.exit, error.exitCode, `${error.code} exit`);
      assert.equal(row.http, error.httpStatus, `${error.code} HTTP`);
      assert.equal(error.name, ErrorClass.name);
    }
    assert.deepEqual(rows.get('LOOM_ERR_INTERNAL'), { exit: EXIT.internal, http: 500 });
  });

  it('appends the hint to the message and keeps the details', () => {
    const error = new ERROR_CLASSES[0]('bad flag', { hint: 'fix it', url: 'http://x' });
    assert.equal(error.message, 'bad flag; fix it');
    assert.deepEqual(error.toJSON(), { code: 'LOOM_ERR_USAGE', message: 'bad flag; fix it', url: 'http://x' });
  });
});
