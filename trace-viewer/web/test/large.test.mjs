// End-to-end test of the timeline on a large trace: node test/large.test.mjs URL TOTAL NEEDLE MATCHES
//
// Run by tests/trace_view.rs against `hv trace view` on a synthetic trace of about a million
// records. TOTAL is the number of items in the trace, NEEDLE a search text with MATCHES matches
// (both counted by the test in a full pass). Checks: the first picture is per-column summaries
// (the page holds a bounded number of items, not the trace); zooming in with the wheel reaches
// exact items and one guest slice (an exit) wide on screen, which a click selects and whose
// details name the exit; back out to the whole trace with 0; search counts and visits matches.
// Exits non-zero with a message on the first failure.
import { check, runPageTest } from './browser.mjs';

const [url, totalArg, needle, matchesArg] = process.argv.slice(2);
const TIMEOUT_MS = 60_000;
if (!url || !totalArg || !needle || !matchesArg) {
  console.error('usage: node test/large.test.mjs URL TOTAL NEEDLE MATCHES');
  process.exit(2);
}
const total = Number(totalArg);
const expectedMatches = Number(matchesArg);

await runPageTest('large trace e2e', { timeoutMs: TIMEOUT_MS, viewport: { width: 1400, height: 700 } }, async (page) => {
  const settled = () => page.waitForFunction(() => window.hvTimeline.ready && window.hvTimeline.settled);
  const state = () => page.evaluate(() => {
    const t = window.hvTimeline;
    return {
      tracks: t.tracks, events: t.events, visible: t.visible, drawn: t.drawn, selected: t.selected,
      exactTracks: t.exactTracks, summaryTracks: t.summaryTracks, matches: t.matches,
      frameMs: t.frameMs,
    };
  });

  await page.goto(url);
  await settled();
  let s = await state();
  const box = await page.locator('#canvas').boundingBox();
  const plot = box.width - 170;
  check(s.events === total, `the page says ${s.events} events, the trace has ${total}`);
  check(s.summaryTracks > 0, `the whole trace is not summarised: ${JSON.stringify(s)}`);
  // Bounded: at most a few drawables per pixel column and track, however long the trace.
  check(s.drawn > 0 && s.drawn <= s.tracks.length * plot * 2,
    `drawn ${s.drawn} for ${s.tracks.length} tracks of ${plot} px`);
  const whole = s.visible;
  console.log(`whole trace: ${s.tracks.length} tracks, ${s.events} events, ${s.drawn} drawn (${s.summaryTracks} summarised), frame ${s.frameMs.toFixed(1)} ms`);

  // Zoom in with the wheel at the first track's row until one guest slice is wide.
  const y = box.y + 28 + 15;
  const x = box.x + 170 + plot * 0.5;
  await page.mouse.move(x, y);
  let steps = 0;
  let frames = [];
  for (;;) {
    s = await state();
    const wide = await page.evaluate(() => {
      const v = window.hvTimeline.visible;
      return (v.end - v.start);
    });
    if (s.exactTracks === s.tracks.length && wide < 50) break;
    check(steps < 40, `40 wheel steps did not reach exact items: ${JSON.stringify(s)}`);
    await page.mouse.wheel(0, -600);
    await settled();
    frames.push((await state()).frameMs);
    steps++;
  }
  console.log(`zoomed in ${steps} steps to ${JSON.stringify(s.visible)}: ${s.drawn} drawn, all exact; frames up to ${Math.max(...frames).toFixed(1)} ms`);

  // One exit: a guest slice in view, zoomed at until it is wide, is selected by a click and its
  // details name the exit and the rip.
  let target = null;
  for (let row = 0; row < s.tracks.length && !target; row++) {
    const items = await page.evaluate((r) => window.hvTimeline.onScreen(r), row);
    const guest = (items || []).find((ev) => ev.n === 'guest' && ev.d > 0);
    if (guest) target = { row, ...guest };
  }
  check(target, 'no guest slice in view on any track');
  // The middle of the slice's part in view: zooming there keeps it under the pointer.
  const mid = (Math.max(target.s, s.visible.start) + Math.min(target.s + target.d, s.visible.end)) / 2;
  const rowY = box.y + 28 + target.row * 30 + 15;
  for (let k = 0; ; k++) {
    const [x0, x1] = await page.evaluate((t) => [window.hvTimeline.xOf(t.s), window.hvTimeline.xOf(t.s + t.d)], target);
    if (x1 - x0 >= 60 || k >= 30) break;
    const x = await page.evaluate((t) => window.hvTimeline.xOf(t), mid);
    await page.mouse.move(box.x + x, rowY);
    await page.mouse.wheel(0, -300);
    await settled();
  }
  const cx = await page.evaluate((t) => window.hvTimeline.xOf(t), mid);
  await page.mouse.click(box.x + cx, rowY);
  s = await state();
  check(s.selected && s.selected.name === 'guest' && s.selected.track === s.tracks[target.row]
    && Math.abs(s.selected.start - target.s) < 1e-6,
  `clicked the guest slice at ${target.s} µs on ${s.tracks[target.row]}, selected ${JSON.stringify(s.selected)}`);
  await page.waitForFunction(() => document.getElementById('details').textContent.includes('exit'));
  const details = await page.textContent('#details');
  check(details.includes('rip'), `the guest slice's details lack the rip: ${details}`);
  console.log(`exit selected at ${(await state()).visible.end - (await state()).visible.start} µs wide: ${details}`);

  // And back to the whole trace.
  await page.focus('#canvas');
  await page.keyboard.press('0');
  await settled();
  s = await state();
  check(s.visible.start === whole.start && s.visible.end === whole.end, `0 did not reset: ${JSON.stringify(s.visible)}`);
  check(s.summaryTracks > 0 && s.drawn <= s.tracks.length * plot * 2, `back out: ${JSON.stringify(s)}`);

  // Search, server-side: the count of the whole trace, Enter visits the first match.
  await page.fill('#search', needle);
  await page.waitForFunction(() => /^\d+ matches/.test(document.getElementById('matches').textContent));
  const text = await page.textContent('#matches');
  check(Number.parseInt(text, 10) === expectedMatches, `search "${needle}": "${text}", want ${expectedMatches}`);
  await page.press('#search', 'Enter');
  await page.waitForFunction(() => window.hvTimeline.selected !== null && window.hvTimeline.selected.name !== 'guest');
  s = await state();
  check(s.selected.name.toLowerCase().includes(needle.toLowerCase()), `Enter selected ${JSON.stringify(s.selected)}`);
  const first = s.selected;
  await page.press('#search', 'Enter');
  await page.waitForFunction((f) => window.hvTimeline.selected && window.hvTimeline.selected.start > f.start, first);
  s = await state();
  console.log(`search "${needle}": ${text}; first at ${first.start} µs, next at ${s.selected.start} µs`);
  await settled();
});
