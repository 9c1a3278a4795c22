// Bundles the extension (src/extension.ts) and its in-VS-Code test suite (test/suite/index.ts)
// with esbuild into dist/. `--production` minifies the extension and drops source maps.
import { build } from 'esbuild';

const production = process.argv.includes('--production');
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['vscode'],
  logLevel: 'warning',
};
await build({
  ...common,
  entryPoints: ['src/extension.ts'],
  outfile: 'dist/extension.js',
  minify: production,
  sourcemap: !production,
});
await build({ ...common, entryPoints: ['test/suite/index.ts'], outfile: 'dist/test/index.js', sourcemap: true });
await build({ ...common, entryPoints: ['test/unit/snapshot.test.ts'], outfile: 'dist/unit/snapshot.test.js', sourcemap: true });
