// Builds dist/ only when it is missing or older than what it is built from, so that `npm test`,
// `npm run demo` and `npm run bench` do not rebuild on every run: `npm ci` already built once
// (the `prepare` script), and a change under src/ (or to the build's own configuration) makes
// the next run build again.
import { execSync } from 'node:child_process';
import process from 'node:process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const outputs = ['dist/index.js', 'dist/bin/loom.cjs'].map((f) => join(root, f));
const inputs = ['src', 'scripts/bundle.mjs', 'tsconfig.json', 'tsconfig.build.json', 'package.json'];

function newest(path) {
  const info = statSync(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let latest = info.mtimeMs;
  for (const entry of readdirSync(path)) latest = Math.max(latest, newest(join(path, entry)));
  return latest;
}

const built = outputs.every((f) => existsSync(f)) ? Math.min(...outputs.map((f) => statSync(f).mtimeMs)) : -Infinity;
const source = Math.max(
  ...inputs
    .map((f) => join(root, f))
    .filter(existsSync)
    .map(newest),
);
if (built < source) {
  process.stderr.write(built === -Infinity ? 'dist/ is missing: building\n' : 'src/ is newer than dist/: building\n');
  execSync('npm run build', { cwd: root, stdio: 'inherit' });
}
