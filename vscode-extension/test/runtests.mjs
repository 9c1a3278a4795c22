// Opens the workbench once with the extension-test payload, so that the remote extension host
// runs dist/test/index.js; VS Code closes the page when run() returns. Then prints the result
// file the suite wrote ($HVDK_TEST_RESULT) and exits 0 only if it passed.
import { createRequire } from 'module';
import fs from 'fs';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.TOOLS + '/playwright-core');
const RESULT = process.env.HVDK_TEST_RESULT;
const LIMIT_MS = 15 * 60 * 1000; // a safety net only: guests may run emulated
const NOISE = /404|ERR_NAME|ENOTFOUND|github|open-vsx|unknown error|telemetry|Failed to load resource/i;

const browser = await chromium.launch({ executablePath: '/usr/lib/chromium/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('console', (m) => {
    const t = m.text();
    if (m.type() === 'error' && !NOISE.test(t)) console.log('[browser]', t.slice(0, 300));
  });
  const closed = new Promise((r) => page.on('close', r));
  await page.goto(process.env.CS_URL);
  const t0 = Date.now();
  // VS Code closes the page when run() returns; the suite also marks its result file done.
  const done = (async () => {
    while (Date.now() - t0 < LIMIT_MS) {
      try {
        if (JSON.parse(fs.readFileSync(RESULT, 'utf8')).done) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  await Promise.race([closed, done]);
  console.log(`runtests: the test run ended after ${Math.round((Date.now() - t0) / 1000)} s`);
  if (!fs.existsSync(RESULT)) {
    console.error('runtests: no result file: the suite did not run (is dist/test/index.js built?)');
  } else {
    const r = JSON.parse(fs.readFileSync(RESULT, 'utf8'));
    for (const s of r.steps) console.log('  ' + s);
    for (const s of r.skipped) console.log(`SKIPPED vscode hook: ${s}`);
    if (!r.pass) console.error('runtests: FAILED: ' + r.error);
    code = r.pass ? 0 : 1;
  }
} catch (e) {
  console.error('runtests: FAILED', e);
} finally {
  await browser.close();
}
process.exit(code);
