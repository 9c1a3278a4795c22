// Page-side frame time of the timeline, for bench/trace_view.rs: node test/frames.mjs URL
//
// Loads the page in headless Chromium, then for the whole trace and views zoomed 10x, 100x, ...
// down to exact items (each settled: the server's answer on hand) draws the view 20 times
// (window.hvTimeline.drawNow) and prints one line per zoom: "frame ZOOM MEDIAN_MS WORST_MS MODE".
import { chromium } from 'playwright-core';

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 700 } });
  page.setDefaultTimeout(120_000);
  await page.goto(url);
  const settled = () => page.waitForFunction(() => window.hvTimeline.ready && window.hvTimeline.settled);
  await settled();
  const whole = await page.evaluate(() => window.hvTimeline.visible);
  for (let zoom = 1; ; zoom *= 10) {
    const span = (whole.end - whole.start) / zoom;
    const mid = whole.start + (whole.end - whole.start) * 0.37;
    await page.evaluate(([a, b]) => window.hvTimeline.show(a, b), [mid - span / 2, mid + span / 2]);
    await settled();
    const r = await page.evaluate(() => {
      const t = [];
      for (let i = 0; i < 20; i++) t.push(window.hvTimeline.drawNow());
      t.sort((a, b) => a - b);
      const s = window.hvTimeline;
      return { median: t[10], worst: t[19], exact: s.exactTracks, summary: s.summaryTracks, drawn: s.drawn };
    });
    console.log(`frame ${zoom}x ${r.median.toFixed(2)} ${r.worst.toFixed(2)} ${r.summary ? `${r.summary} summarised` : 'exact'} (${r.drawn} drawn)`);
    if (!r.summary || zoom >= 1e9) break;
  }
} finally {
  await browser.close();
}
