// End-to-end test of the trace viewer page in real headless Chromium (playwright-core, Debian's
// /usr/bin/chromium). Usage: node test/view.test.mjs URL [vCPU labels, comma separated]
//
// Run by tests/trace_view.rs against `hv trace view` on a synthetic trace whose tracks are
// "alpha vCPU 0", "beta vCPU 0" and "beta vCPU 1" and whose IRQ instants are named "inject 32".
// Exits non-zero with a message on the first failure.
import { check, runPageTest } from './browser.mjs';

const url = process.argv[2];
const expectedTracks = (process.argv[3] || 'alpha vCPU 0,beta vCPU 0,beta vCPU 1').split(',');
const instantName = process.argv[4] || 'inject 32';
const TIMEOUT_MS = 30_000;

if (!url) {
  console.error('usage: node test/view.test.mjs URL [TRACK,TRACK...] [INSTANT]');
  process.exit(2);
}

await runPageTest('trace viewer e2e', { timeoutMs: TIMEOUT_MS }, async (page) => {

  await page.goto(url);
  await page.waitForFunction(() => window.hvTimeline && window.hvTimeline.ready && window.hvTimeline.settled);
  const state = () => page.evaluate(() => {
    const t = window.hvTimeline;
    return {
      tracks: t.tracks, events: t.events, visible: t.visible, drawn: t.drawn, selected: t.selected,
      flows: t.flows, flowsDrawn: t.flowsDrawn,
    };
  });

  let s = await state();
  for (const label of expectedTracks) {
    check(s.tracks.includes(label), `track "${label}" missing; tracks are ${JSON.stringify(s.tracks)}`);
  }
  check(s.events > 0, `no drawable events (events = ${s.events})`);
  check(s.drawn > 0, `nothing drawn in the first frame (drawn = ${s.drawn})`);
  // The trace's one device-model request is a flow, drawn in the whole-trace view.
  check(s.flows === 1 && s.flowsDrawn === 1, `flows ${s.flows}, drawn ${s.flowsDrawn} (want 1 and 1)`);
  console.log(`tracks ${JSON.stringify(s.tracks)}, ${s.events} events, ${s.drawn} drawn`);

  // Search an instant name: matches, Enter selects the first and centres it, details show it.
  await page.fill('#search', instantName);
  await page.waitForFunction(() => document.getElementById('matches').textContent !== '');
  const matchesText = await page.textContent('#matches');
  const count = Number.parseInt(matchesText, 10);
  check(count > 0, `searching "${instantName}" shows "${matchesText}", not a positive count of matches`);
  await page.press('#search', 'Enter');
  await page.waitForFunction(() => window.hvTimeline.selected !== null);
  s = await state();
  check(s.selected.name.includes(instantName), `Enter selected ${JSON.stringify(s.selected)}`);
  const centre = (s.visible.start + s.visible.end) / 2;
  const span = s.visible.end - s.visible.start;
  check(Math.abs(centre - s.selected.start) < span * 0.01,
    `the view ${JSON.stringify(s.visible)} is not centred on the match at ${s.selected.start} µs`);
  await page.waitForFunction(() => document.getElementById('details').textContent.includes('vector'));
  const detailsText = await page.textContent('#details');
  check(detailsText.includes(instantName), `#details does not show "${instantName}": ${detailsText}`);
  check(detailsText.includes(s.selected.track), `#details does not show the track: ${detailsText}`);
  console.log(`search: ${matchesText}; selected ${s.selected.name} on ${s.selected.track} at ${s.selected.start} µs`);

  // Reset, then zoom in around the middle of the plot with the wheel.
  const box = await page.locator('#canvas').boundingBox();
  check(box && box.width > 300, `the canvas is too small: ${JSON.stringify(box)}`);
  await page.focus('#canvas');
  await page.keyboard.press('0');
  s = await state();
  const before = s.visible;
  const x = box.x + box.width * 0.6;
  const y = box.y + 28 + 15; // the first track's row
  await page.mouse.move(x, y);
  await page.mouse.wheel(0, -400);
  await page.waitForFunction((b) => {
    const v = window.hvTimeline.visible;
    return v.end - v.start < b.end - b.start;
  }, before);
  s = await state();
  const zoomed = s.visible;
  check(zoomed.start >= before.start - 1e-9 && zoomed.end <= before.end + 1e-9,
    `zoom went outside the previous range: ${JSON.stringify(before)} -> ${JSON.stringify(zoomed)}`);
  console.log(`wheel zoom: ${JSON.stringify(before)} -> ${JSON.stringify(zoomed)}`);

  // Drag to the right: the view moves to earlier times, keeping its span.
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + 100, y, { steps: 5 });
  await page.mouse.up();
  s = await state();
  const panned = s.visible;
  const zoomedSpan = zoomed.end - zoomed.start;
  check(panned.start < zoomed.start, `drag did not pan: ${JSON.stringify(zoomed)} -> ${JSON.stringify(panned)}`);
  check(Math.abs((panned.end - panned.start) - zoomedSpan) < zoomedSpan * 1e-6, 'drag changed the span');
  console.log(`drag: ${JSON.stringify(zoomed)} -> ${JSON.stringify(panned)}`);

  // Arrow keys pan too; 0 resets.
  await page.keyboard.press('ArrowRight');
  s = await state();
  check(s.visible.start > panned.start, `ArrowRight did not pan: ${JSON.stringify(s.visible)}`);
  await page.keyboard.press('0');
  s = await state();
  check(s.visible.start === before.start && s.visible.end === before.end,
    `0 did not reset the view: ${JSON.stringify(s.visible)} vs ${JSON.stringify(before)}`);

  // Clicking a slice selects it: the first track is a guest most of the time.
  await page.waitForFunction(() => window.hvTimeline.settled);
  await page.mouse.click(box.x + 170 + (box.width - 170) * 0.25, y);
  s = await state();
  check(s.selected && s.selected.track === s.tracks[0], `a click on the first track selected ${JSON.stringify(s.selected)}`);
  console.log(`click: selected ${s.selected.name} (${s.selected.duration} µs)`);
});
