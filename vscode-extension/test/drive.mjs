// Drives the real VS Code workbench (code-server) in headless Chromium like a person would:
// the Partitions view, then (with KVM) a breakpoint in sensor_write_ctrl set with F9, "Debug:
// Start Debugging" from .vscode/launch.json, the stop, the Call Stack, req->offset in Variables,
// step over, the Partitions view's live states, continue and stop. Screenshots go to $SHOT_DIR.
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.TOOLS + '/playwright-core');
const SHOTS = process.env.SHOT_DIR;
const KVM = process.env.HVDK_TEST_KVM === '1';
const LONG = 240_000; // guests may run emulated: generous, and never a timing assertion
const DEMO = ['control', 'telemetry', 'worker', 'sensor-model'];
const t0 = Date.now();
const log = (s) => console.log(`drive: ${((Date.now() - t0) / 1000).toFixed(1)} s ${s}`);
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
let page;

/**
 * Runs a command from the palette, picking the row whose label is exactly `label`. Retried: the
 * palette closes when something else takes the focus (e.g. the editor revealing a new stop).
 */
async function palette(label) {
  let last;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await page.keyboard.press('F1');
      const input = page.locator('.quick-input-widget input');
      await input.waitFor({ state: 'visible', timeout: 15000 });
      await input.fill('>' + label);
      const row = page.locator('.quick-input-list .monaco-list-row .label-name', { hasText: new RegExp('^' + escape(label) + '$') }).first();
      await row.waitFor({ state: 'visible', timeout: 15000 });
      await row.click({ timeout: 10000 });
      return;
    } catch (e) {
      const rows = await page.locator('.quick-input-list .monaco-list-row .label-name').allInnerTexts().catch(() => []);
      last = new Error(`palette "${label}" (attempt ${attempt + 1}): ${e.message.split('\n')[0]}; rows: ${JSON.stringify(rows.slice(0, 8))}`);
      console.log(`drive: ${last.message}`);
      await page.keyboard.press('Escape');
      await page.waitForTimeout(1000);
    }
  }
  throw last;
}

/** The Partitions pane of the Run and Debug side bar. */
function partitionsPane() {
  return page.locator('.pane', { has: page.locator('.pane-header', { hasText: /^Partitions/ }) });
}

/** Expands or collapses the Run and Debug pane titled `title` (a click on its header if needed). */
async function setPane(title, expanded) {
  const header = page.locator('.pane-header', { hasText: new RegExp(`^${title}`) }).first();
  if (((await header.getAttribute('aria-expanded')) === 'true') !== expanded) await header.click();
}

/** Opens Run and Debug and expands the Partitions pane (a click on its header when collapsed). */
async function showPartitions() {
  await palette('View: Show Run and Debug');
  const header = page.locator('.pane-header', { hasText: /^Partitions/ }).first();
  await header.waitFor({ timeout: 60000 });
  if ((await header.getAttribute('aria-expanded')) !== 'true') await header.click();
}

async function main() {
  const browser = await chromium.launch({ executablePath: '/usr/lib/chromium/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  try {
    await page.goto(process.env.CS_URL);
    await page.locator('.monaco-workbench').waitFor({ timeout: 90000 });
    log('workbench visible');
    // A wider side bar (drag its sash) so that variables and partition states are readable.
    const sb = await page.locator('.part.sidebar').boundingBox();
    if (sb) {
      await page.mouse.move(sb.x + sb.width + 1, sb.y + sb.height / 2);
      await page.mouse.down();
      await page.mouse.move(sb.x + sb.width + 240, sb.y + sb.height / 2, { steps: 8 });
      await page.mouse.up();
    }
    // The extension activates on the repository's TOML files; its commands are in the palette.
    await showPartitions();
    const pane = partitionsPane();
    await pane.waitFor({ timeout: 60000 });
    log('Partitions view shown');
    if (!KVM) {
      await pane.getByText('No hvdk system is running').first().waitFor({ timeout: 60000 });
      log('Partitions view: "No hvdk system is running" (its welcome content)');
      await page.screenshot({ path: `${SHOTS}/partitions-idle.png` });
      log('no KVM: the debug session is not driven');
      console.log(`SKIPPED vscode UI debug session: ${process.env.HVDK_TEST_KVM_REASON || 'no /dev/kvm'}`);
      return;
    }

    // A breakpoint in sensor_write_ctrl, the way a person sets it: open the file, go to the line, F9.
    const fs = await import('fs');
    const src = fs.readFileSync(`${process.env.REPO}/guests/demo/sensor_model.c`, 'utf8').split('\n');
    const fnLine = src.findIndex((l) => l.startsWith('void sensor_write_ctrl('));
    const bpLine = src.findIndex((l, i) => i > fnLine && l.includes('struct sensor_state *s = ctx;')) + 1;
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').fill('sensor_model.c');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'sensor_model.c' }).first().waitFor({ timeout: 15000 });
    await page.keyboard.press('Enter');
    await page.locator('.tab.active', { hasText: 'sensor_model.c' }).waitFor({ timeout: 15000 });
    await page.keyboard.press('Control+G');
    await page.locator('.quick-input-widget input').fill(`:${bpLine}`);
    await page.locator('.quick-input-list .monaco-list-row', { hasText: `line ${bpLine}` }).first().waitFor({ timeout: 15000 });
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout: 15000 });
    await page.locator('.statusbar', { hasText: `Ln ${bpLine},` }).waitFor({ timeout: 15000 });
    await page.keyboard.press('F9');
    await setPane('Watch', false); // room for Variables
    await page.locator('.codicon-debug-breakpoint').first().waitFor({ timeout: 15000 });
    log(`breakpoint set at sensor_model.c:${bpLine} with F9`);

    await palette('Debug: Start Debugging');
    log('Debug: Start Debugging (hv: debug sensor-model (demo))');
    const stack = page.locator('.debug-call-stack');
    await stack.getByText('sensor_write_ctrl').first().waitFor({ timeout: LONG });
    const frameRow = page.locator('.debug-call-stack .monaco-list-row', { hasText: 'sensor_write_ctrl' }).first();
    const before = (await frameRow.innerText()).replace(/\s+/g, ' ');
    log(`stopped: Call Stack shows "${before}"`);

    // Variables: expand Locals (the adapter's first scope is "Device request"), then req; read
    // offset. A click while the tree re-renders can be lost: retry until the child row shows.
    // The tree renders only the rows in view, and a pane keeps its height while others change:
    // every other pane is collapsed so that Variables takes the side bar (else req's row can
    // stay below the pane's edge, never rendered). Call Stack comes back for the step.
    for (const title of ['Call Stack', 'Breakpoints', 'Partitions']) await setPane(title, false);
    const varRow = (name) => page.locator('.debug-variables .monaco-list-row').filter({ hasText: new RegExp(`^\\s*${name}\\s*[=:]`) }).first();
    const expand = async (row, child, what) => {
      for (let i = 0; i < 6; i++) {
        if (await child.isVisible()) return;
        await row.waitFor({ timeout: 30000 });
        if ((await row.getAttribute('aria-expanded')) !== 'true') await row.click();
        try {
          await child.waitFor({ timeout: 5000 });
          return;
        } catch {}
      }
      throw new Error(`cannot expand ${what} in Variables`);
    };
    const locals = page.locator('.debug-variables .monaco-list-row', { hasText: /^Locals$/ }).first();
    const req = varRow('req');
    const offset = varRow('offset');
    await expand(locals, req, 'Locals');
    await expand(req, offset, 'req');
    const offsetText = (await offset.innerText()).replace(/\s+/g, ' ');
    log(`Variables: req → "${offsetText}"`);
    if (!/\b(12|0xc)\b/.test(offsetText)) throw new Error(`req->offset shows "${offsetText}", expected 12`);
    // Select req->offset and reveal it (keyboard moves scroll the tree to the focused row).
    await offset.click();
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowDown');
    await page.mouse.move(900, 300); // no hover on the Variables tree
    await page.screenshot({ path: `${SHOTS}/stop.png` });
    log(`screenshot ${SHOTS}/stop.png`);
    await setPane('Call Stack', true);

    // Step over: the frame's line changes.
    await palette('Debug: Step Over');
    await page.waitForFunction((b) => {
      const row = [...document.querySelectorAll('.debug-call-stack .monaco-list-row')].find((r) => r.innerText.includes('sensor_write_ctrl'));
      return row && row.innerText.replace(/\s+/g, ' ') !== b;
    }, before, { timeout: LONG }).catch(() => {
      throw new Error('Step Over did not move the top frame');
    });
    log(`stepped over: "${(await frameRow.innerText()).replace(/\s+/g, ' ')}"`);

    // The Partitions view: the four partitions, sensor-model stopped in the debugger. The other
    // panes are collapsed so that the whole tree is rendered.
    for (const title of ['Variables', 'Watch', 'Call Stack', 'Breakpoints']) await setPane(title, false);
    await setPane('Partitions', true);
    const pane2 = partitionsPane();
    await pane2.locator('.monaco-list-row', { hasText: /^sensor-model\s*debug-stopped/ }).first().waitFor({ timeout: LONG });
    for (const name of DEMO) await pane2.locator('.monaco-list-row .label-name', { hasText: new RegExp(`^${escape(name)}$`) }).first().waitFor({ timeout: 30000 });
    const rows = (await pane2.locator('.monaco-list-row').allInnerTexts()).map((t) => t.replace(/\s+/g, ' '));
    log(`Partitions view: ${rows.join(' | ')}`);
    await pane2.screenshot({ path: `${SHOTS}/partitions.png` });
    log(`screenshot ${SHOTS}/partitions.png`);

    await palette('Remove All Breakpoints');
    await palette('Debug: Continue');
    await pane2.locator('.monaco-list-row', { hasText: /^sensor-model\s*running/ }).first().waitFor({ timeout: LONG });
    log('continued: sensor-model no longer debug-stopped in the Partitions view');

    // Partition actions from the palette (each asks for the partition in a quick pick).
    const pick = async (command, partition) => {
      await palette(command);
      const input = page.locator('.quick-input-widget input');
      await input.waitFor({ state: 'visible', timeout: 15000 });
      await input.fill(partition);
      await page.locator('.quick-input-list .monaco-list-row .label-name', { hasText: new RegExp(`^${escape(partition)}$`) }).first().click();
    };
    await pick('hvdk: Pause', 'worker');
    await pane2.locator('.monaco-list-row', { hasText: /^worker\s*paused/ }).first().waitFor({ timeout: LONG });
    log('hvdk: Pause → worker paused in the Partitions view');
    await pick('hvdk: Resume', 'worker');
    await pane2.locator('.monaco-list-row', { hasText: /^worker\s*running/ }).first().waitFor({ timeout: LONG });
    log('hvdk: Resume → worker running again');
    // worker's console as a terminal: its lines arrive in the terminal.
    await pick('hvdk: Open Console', 'worker');
    await page.locator('.xterm .xterm-rows', { hasText: /worker: / }).first().waitFor({ timeout: LONG });
    const term = (await page.locator('.xterm .xterm-rows').first().innerText()).split('\n').filter((l) => l.trim()).slice(-3);
    log(`hvdk: Open Console → terminal "hv: worker" shows: ${term.join(' / ')}`);
    await page.screenshot({ path: `${SHOTS}/console.png` });

    // "hv: Open Trace" → record 2 s of the running demo → the timeline in a webview (the viewer's
    // page in the webview's iframe); a guest slice's "Open in editor" opens its source line.
    await palette('hv: Open Trace');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Record the running system…' }).first().click();
    const secondsBox = page.locator('.quick-input-widget input');
    await page.locator('.quick-input-widget', { hasText: 'Seconds of the running system' }).waitFor({ timeout: 15000 });
    await secondsBox.fill('2');
    await secondsBox.press('Enter');
    let traceFrame;
    for (const until = Date.now() + LONG; !traceFrame; await page.waitForTimeout(250)) {
      traceFrame = page.frames().find((f) => /^http:\/\/127\.0\.0\.1:\d+\/$/.test(f.url()));
      if (Date.now() > until) throw new Error(`no trace viewer frame; frames: ${page.frames().map((f) => f.url()).join(' ')}`);
    }
    await traceFrame.waitForFunction(() => window.hvTimeline && window.hvTimeline.ready && window.hvTimeline.settled, null, { timeout: LONG });
    const traceState = await traceFrame.evaluate(() => ({ tracks: window.hvTimeline.tracks, events: window.hvTimeline.events }));
    if (!traceState.events || !traceState.tracks.length) throw new Error(`empty trace view: ${JSON.stringify(traceState)}`);
    log(`hv: Open Trace → recorded 2 s: ${traceState.events} events on ${traceState.tracks.length} tracks in a webview`);
    // The first guest slices may have no rip (0): visit matches until one resolves to a line.
    await traceFrame.fill('#search', 'guest');
    await traceFrame.waitForFunction(() => /^\d+ matches/.test(document.getElementById('matches').textContent), null, { timeout: LONG });
    let source = null;
    for (let k = 0; k < 20 && !source; k++) {
      await traceFrame.press('#search', 'Enter');
      source = await traceFrame.waitForFunction(() => window.hvTimeline.selected && document.getElementById('open-source')
        && window.hvTimeline.source, null, { timeout: 5000 }).then((h) => h.jsonValue()).catch(() => null);
    }
    if (!source) throw new Error('no guest slice resolved to a source line');
    await page.screenshot({ path: `${SHOTS}/trace.png` });
    await traceFrame.click('#open-source');
    const base = source.file.split('/').pop();
    await page.locator('.tab.active', { hasText: base }).first().waitFor({ timeout: LONG });
    const cursor = await page.locator('.statusbar-item', { hasText: /^Ln \d+/ }).first().innerText();
    if (!cursor.startsWith(`Ln ${source.line},`)) throw new Error(`opened ${base} at "${cursor}", want line ${source.line}`);
    log(`trace: a guest slice's rip → ${source.file}:${source.line} (${source.function}); "Open in editor" opened ${base} at ${cursor}`);
    await palette('View: Close All Editors'); // the trace's viewer stops with its panel

    // The configuration provider's quick pick: launch.json's attach entry has no partition.
    await palette('Debug: Select and Start Debugging');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'hv: attach to the running system' }).first().click();
    const input = page.locator('.quick-input-widget input');
    await page.locator('.quick-input-widget', { hasText: 'Debug a partition of demo' }).waitFor({ timeout: 60000 });
    await input.fill('worker · vCPU 1');
    await page.locator('.quick-input-list .monaco-list-row .label-name', { hasText: /^worker · vCPU 1$/ }).first().click();
    log('Select and Start Debugging → "hv: attach…" → quick pick → worker · vCPU 1');
    await setPane('Call Stack', true);
    const vcpuSession = page.locator('.debug-call-stack .monaco-list-row', { hasText: /^\s*hv: worker vCPU 1/ }).first();
    await vcpuSession.waitFor({ timeout: LONG });
    await vcpuSession.click(); // focus it: Pause acts on the focused session
    await palette('Debug: Pause');
    await setPane('Call Stack', false); // the Partitions tree renders only the rows in view
    await pane2.locator('.monaco-list-row', { hasText: /^vCPU 1\s*debug-stopped/ }).first().waitFor({ timeout: LONG });
    const workerRows = (await pane2.locator('.monaco-list-row').allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).filter((t) => /^(worker|vCPU)/.test(t));
    log(`paused the vCPU session: ${workerRows.join(' | ')}`);
    await page.screenshot({ path: `${SHOTS}/vcpu.png` });
    await palette('Debug: Disconnect'); // the focused attach session: the vCPU runs on
    await pane2.locator('.monaco-list-row', { hasText: /^vCPU 1\s*debug-stopped/ }).first().waitFor({ state: 'detached', timeout: LONG });
    log('stopped the vCPU session: worker vCPU 1 runs on');
    await palette('Debug: Stop');
    await page.locator('.debug-toolbar').waitFor({ state: 'hidden', timeout: LONG });
    log('stopped the session: the debug toolbar is gone');
  } catch (e) {
    await page.screenshot({ path: `${SHOTS}/ui-fail.png` }).catch(() => {});
    const vars = await page.locator('.debug-variables .monaco-list-row').allInnerTexts().catch(() => []);
    if (vars.length) console.error('drive: Variables rows:', JSON.stringify(vars));
    throw e;
  } finally {
    await browser.close();
  }
}

main().then(
  () => log('passed'),
  (e) => {
    console.error('drive: FAILED', e);
    process.exit(1);
  },
);
