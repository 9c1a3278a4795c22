// Shared by the page tests: the page in Debian's headless Chromium through playwright-core, its
// errors (script errors, console errors, failed requests, HTTP errors) collected as problems that
// fail the test, and one exit status.

import { chromium } from 'playwright-core';

/** A failed check (reported without a stack). */
export class Failure extends Error {}

/** Throws a Failure with `message` unless `condition`. */
export function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/**
 * Opens a page, runs `body(page)`, and fails on a thrown error or on any problem the page had.
 * Prints `<name>: all checks passed in N ms`, or `FAIL: …` and exits with status 1.
 * `requestFailures: false` tolerates aborted requests (a polling page cancels its own).
 */
export async function runPageTest(name, options, body) {
  const { timeoutMs = 30_000, viewport = { width: 1200, height: 600 }, requestFailures = true } = options;
  const started = Date.now();
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  let failed = false;
  try {
    const page = await browser.newPage({ viewport });
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    if (requestFailures) page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`); });
    page.setDefaultTimeout(timeoutMs);
    await body(page);
    check(problems.length === 0, problems.join('\n'));
  } catch (e) {
    failed = true;
    console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  } finally {
    await browser.close();
  }
  if (failed) process.exit(1);
  console.log(`${name}: all checks passed in ${Date.now() - started} ms`);
}
