// End-to-end test of the live timeline: node test/live.test.mjs URL
//
// Run by tests/trace_view.rs against `hv trace view --live` following a running system. Checks:
// the page follows (its view's end moves on as records arrive, and tracks are drawn), Freeze
// stops it (the view stays), Save writes a trace file (its path is printed as "saved: PATH").
// Exits non-zero with a message on the first failure.
import { chromium } from 'playwright-core';

const url = process.argv[2];
const TIMEOUT_MS = 60_000;
if (!url) {
  console.error('usage: node test/live.test.mjs URL');
  process.exit(2);
}

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

const started = Date.now();
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 600 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`); });
  page.setDefaultTimeout(TIMEOUT_MS);
  const state = () => page.evaluate(() => {
    const t = window.hvTimeline;
    return { live: t.live, following: t.following, visible: t.visible, drawn: t.drawn, tracks: t.tracks, events: t.events };
  });

  await page.goto(url);
  await page.waitForFunction(() => window.hvTimeline.ready && window.hvTimeline.live && window.hvTimeline.drawn > 0);
  let s = await state();
  check(s.following, `a live view starts following: ${JSON.stringify(s)}`);
  const first = s;
  await page.waitForFunction((end) => window.hvTimeline.visible.end > end + 100, first.visible.end);
  s = await state();
  check(s.events > first.events, `no new events while following: ${first.events} -> ${s.events}`);
  console.log(`following: ${s.tracks.length} tracks; view end ${first.visible.end.toFixed(0)} -> ${s.visible.end.toFixed(0)} µs; events ${first.events} -> ${s.events}`);

  await page.click('#follow');
  s = await state();
  check(!s.following, 'Freeze did not stop following');
  const frozen = s.visible;
  await page.waitForTimeout(1500);
  s = await state();
  check(s.visible.start === frozen.start && s.visible.end === frozen.end,
    `the frozen view moved: ${JSON.stringify(frozen)} -> ${JSON.stringify(s.visible)}`);

  await page.click('#save');
  await page.waitForFunction(() => /^saved to /.test(document.getElementById('saved').textContent));
  const saved = (await page.textContent('#saved')).replace(/^saved to /, '');
  console.log(`saved: ${saved}`);
  check(problems.length === 0, problems.join('\n'));
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log(`live view e2e: all checks passed in ${Date.now() - started} ms`);
