// Builds the operator console (server/console) into dist/console: one bundled, minified
// app.js (Preact + htm, no CDN), app.css and index.html, served by server/src/routes_console.ts.
// Run by `npm run build` and by `prepare` (so `npm ci` builds it too).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'server', 'console');
const out = join(root, 'dist', 'console');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(src, 'main.js')],
  outfile: join(out, 'app.js'),
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of ['app.css', 'index.html']) copyFileSync(join(src, f), join(out, f));
