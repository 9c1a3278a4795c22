// End-to-end test of the live timeline: node test/live.test.mjs URL
//
// Run by tests/trace_view.rs against `hv trace view --live` following a running system. Checks:
// the page follows (its view's end moves on as records arrive, and tracks are drawn), Freeze
// stops it (the view stays), Save writes a trace file (its path is printed as "saved: PATH").
// Exits non-zero with a message on the first failure.
import { check, runPageTest } from './browser.mjs';

const url = process.argv[2];
const TIMEOUT_MS = 60_000;
if (!url) {
  console.error('usage: node test/live.test.mjs URL');
  process.exit(2);
}

await runPageTest('live view e2e', { timeoutMs: TIMEOUT_MS, requestFailures: false }, async (page) => {
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
});
