// Runs inside VS Code's extension host through the extension-test hook (extensionTestsPath),
// against the hvdk extension installed from its .vsix: the Partitions view's data, a real `hv`
// debug session on the demo's device model (breakpoint in sensor_write_ctrl, stop, call stack,
// req->offset, step over, continue, stop), and the `hv lsp` client on examples/demo.toml.
// Writes every step to $HVDK_TEST_RESULT; throws (failing the run) on the first failure.
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';

import type { HvdkApi } from '../../src/extension';
import type { Snapshot } from '../../src/snapshot';

type DapMessage = { type: string; event?: string; command?: string; body?: Record<string, unknown>; success?: boolean; message?: string; session?: string };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const env = (name: string): string => process.env[name] ?? '';
const DEMO_PARTITIONS = ['control', 'telemetry', 'worker', 'sensor-model'];
/** Generous: guests run emulated on some hosts; nothing here is a timing assertion. */
const LONG = 240_000;

class Steps {
  readonly steps: string[] = [];
  readonly skipped: string[] = [];
  pass = false;
  done = false;
  error = '';
  log(s: string): void {
    this.steps.push(`${new Date().toISOString().slice(11, 23)} ${s}`);
    this.save();
  }
  save(): void {
    const file = env('HVDK_TEST_RESULT') || '/tmp/hvdk-vscode-test-result.json';
    fs.writeFileSync(file, JSON.stringify({ pass: this.pass, done: this.done, steps: this.steps, skipped: this.skipped, error: this.error }, null, 2));
  }
}

async function waitFor<T>(what: string, f: () => T | undefined | Promise<T | undefined>, ms = LONG): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined) {
      return v;
    }
    if (Date.now() - t0 > ms) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    }
    await sleep(200);
  }
}

function check(cond: boolean, msg: string): void {
  if (!cond) {
    throw new Error(msg);
  }
}

/** Every DAP message of `hv` sessions, in order. */
class DapLog {
  readonly messages: DapMessage[] = [];
  next(pred: (m: DapMessage) => boolean, from: number, what: string, ms = LONG): Promise<{ m: DapMessage; at: number }> {
    return waitFor(what, () => {
      for (let i = from; i < this.messages.length; i++) {
        if (pred(this.messages[i])) {
          return { m: this.messages[i], at: i + 1 };
        }
      }
      return undefined;
    }, ms);
  }
}

async function debugDeviceModel(api: HvdkApi, out: Steps, root: string): Promise<void> {
  const dap = new DapLog();
  const tracker = vscode.debug.registerDebugAdapterTrackerFactory('hv', {
    createDebugAdapterTracker: (s: vscode.DebugSession) => ({
      onDidSendMessage: (m: DapMessage) => dap.messages.push({ ...m, session: s.id }),
      onError: (e: Error) => out.log(`adapter error: ${e.message}`),
      onExit: (code: number | undefined, signal: string | undefined) => out.log(`adapter exited: ${code ?? ''} ${signal ?? ''}`),
    }),
  });
  try {
    const file = path.join(root, 'guests/demo/sensor_model.c');
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const fnLine = lines.findIndex((l) => l.startsWith('void sensor_write_ctrl('));
    check(fnLine >= 0, 'sensor_write_ctrl not found in sensor_model.c');
    const bodyLine = lines.findIndex((l, i) => i > fnLine && l.includes('struct sensor_state *s = ctx;'));
    const endLine = lines.findIndex((l, i) => i > fnLine && l === '}');
    vscode.debug.addBreakpoints([new vscode.SourceBreakpoint(new vscode.Location(vscode.Uri.file(file), new vscode.Position(bodyLine, 0)))]);
    out.log(`breakpoint at sensor_model.c:${bodyLine + 1} (in sensor_write_ctrl, lines ${fnLine + 1}-${endLine + 1})`);

    const folder = vscode.workspace.workspaceFolders?.[0];
    const terminated = new Promise<void>((r) => {
      const d = vscode.debug.onDidTerminateDebugSession((s) => {
        if (s.type === 'hv') {
          d.dispose();
          r();
        }
      });
    });
    const started = await vscode.debug.startDebugging(folder, 'hv: debug sensor-model (demo)'); // .vscode/launch.json
    check(started, 'startDebugging returned false');
    const session = await waitFor('the hv session', () => (vscode.debug.activeDebugSession?.type === 'hv' ? vscode.debug.activeDebugSession : undefined));
    out.log(`session ${session.name} started (${session.configuration.request} ${String(session.configuration.system)} ${String(session.configuration.partition)})`);

    const stop = await dap.next((m) => m.type === 'event' && m.event === 'stopped' && m.session === session.id, 0, 'the stop at the breakpoint');
    const body = stop.m.body ?? {};
    const threadId = Number(body.threadId ?? 1);
    out.log(`stopped: reason ${String(body.reason)}, thread ${threadId}${body.description ? `, ${String(body.description)}` : ''}`);

    const st = (await session.customRequest('stackTrace', { threadId, startFrame: 0, levels: 20 })) as { stackFrames: { id: number; name: string; line: number; source?: { path?: string } }[] };
    const top = st.stackFrames[0];
    out.log(`call stack: ${st.stackFrames.map((f) => `${f.name} ${path.basename(f.source?.path ?? '?')}:${f.line}`).join(' < ')}`);
    check(top.name.includes('sensor_write_ctrl'), `top frame is ${top.name}, not sensor_write_ctrl`);
    check((top.source?.path ?? '').endsWith('guests/demo/sensor_model.c'), `top frame's source is ${top.source?.path}`);
    check(top.line > fnLine && top.line <= endLine + 1, `top frame's line ${top.line} is outside sensor_write_ctrl`);

    const ev = (await session.customRequest('evaluate', { expression: 'req->offset', frameId: top.id, context: 'watch' })) as { result: string };
    out.log(`req->offset = ${ev.result}`);
    check(/^(12|0xc)\b/.test(ev.result.trim()), `req->offset is ${ev.result}, expected 12`);

    const scopes = (await session.customRequest('scopes', { frameId: top.id })) as { scopes: { name: string; variablesReference: number }[] };
    out.log(`scopes: ${scopes.scopes.map((s) => s.name).join(', ')}`);
    const locals = scopes.scopes.find((s) => /local/i.test(s.name));
    check(locals !== undefined, 'no Locals scope');
    const vars = (await session.customRequest('variables', { variablesReference: locals!.variablesReference })) as { variables: { name: string; value: string; variablesReference: number }[] };
    out.log(`locals: ${vars.variables.map((v) => `${v.name}=${v.value}`).join(', ')}`);
    const req = vars.variables.find((v) => v.name === 'req');
    check(req !== undefined && req.variablesReference > 0, 'req is not an expandable local');
    const fields = (await session.customRequest('variables', { variablesReference: req!.variablesReference })) as { variables: { name: string; value: string; variablesReference: number }[] };
    let offset = fields.variables.find((v) => v.name === 'offset');
    if (!offset && fields.variables.length === 1 && fields.variables[0].variablesReference > 0) {
      // a pointer shows its pointee (*req) as one child
      const inner = (await session.customRequest('variables', { variablesReference: fields.variables[0].variablesReference })) as { variables: { name: string; value: string; variablesReference: number }[] };
      offset = inner.variables.find((v) => v.name === 'offset');
    }
    out.log(`req expands to: ${fields.variables.map((v) => `${v.name}=${v.value}`).join(', ')}`);
    check(offset !== undefined && /^(12|0xc)\b/.test(offset.value), `req->offset in Variables is ${offset?.value}`);

    // The Partitions view while the model is stopped: four partitions, sensor-model debug-stopped.
    api.hvPath();
    const during = await waitFor('a snapshot showing sensor-model stopped in the debugger', () => {
      const s = api.partitions();
      return s && s.partitions.find((p) => p.name === 'sensor-model')?.state === 'stopped_in_debugger' ? s : undefined;
    });
    out.log(`partitions while stopped: ${describe(during)}`);
    check(DEMO_PARTITIONS.every((n) => during.partitions.some((p) => p.name === n)), 'the Partitions view does not list the four demo partitions');

    const stepFrom = dap.messages.length;
    await session.customRequest('next', { threadId });
    const stepped = await dap.next((m) => m.type === 'event' && m.event === 'stopped' && m.session === session.id, stepFrom, 'the stop after next');
    const st2 = (await session.customRequest('stackTrace', { threadId, startFrame: 0, levels: 1 })) as { stackFrames: { name: string; line: number }[] };
    out.log(`next: stopped (${String(stepped.m.body?.reason)}) at ${st2.stackFrames[0].name}:${st2.stackFrames[0].line}`);
    check(st2.stackFrames[0].line !== top.line, `next did not move (still line ${top.line})`);

    vscode.debug.removeBreakpoints(vscode.debug.breakpoints);
    await session.customRequest('continue', { threadId });
    out.log('continue: answered');
    const running = await waitFor('sensor-model running again', () => {
      const s = api.partitions();
      const p = s?.partitions.find((q) => q.name === 'sensor-model');
      return p && p.state !== 'stopped_in_debugger' ? s : undefined;
    });
    out.log(`partitions after continue: ${describe(running!)}`);

    await debugOneVcpu(api, out, dap);

    await vscode.debug.stopDebugging(session);
    await Promise.race([terminated, sleep(LONG).then(() => Promise.reject(new Error('session did not terminate')))]);
    out.log('session terminated');
  } finally {
    tracker.dispose();
  }
}

/**
 * The Partitions view's "Debug This vCPU" on worker vCPU 1 (an attach session to the system the
 * first session launched): pause stops vCPU 1 alone, its sibling runs on; disconnect resumes it.
 */
async function debugOneVcpu(api: HvdkApi, out: Steps, dap: DapLog): Promise<void> {
  const snap = api.partitions();
  const worker = snap?.partitions.find((p) => p.name === 'worker');
  check(worker !== undefined && worker.vcpus.length === 2, 'worker with two vCPUs not in the Partitions view');
  const started = new Promise<vscode.DebugSession>((r) => {
    const d = vscode.debug.onDidStartDebugSession((s) => {
      if (s.type === 'hv' && s.configuration.request === 'attach') {
        d.dispose();
        r(s);
      }
    });
  });
  const ok = await vscode.commands.executeCommand('hvdk.debugVcpu', { kind: 'vcpu', partition: worker!, vcpu: worker!.vcpus[1] });
  check(ok === true, 'hvdk.debugVcpu did not start a session');
  const s = await started;
  out.log(`Debug This vCPU: session ${s.name} (attach ${String(s.configuration.partition)} vCPU ${String(s.configuration.vcpu)} on ${String(s.configuration.link)})`);
  const from = 0;
  await dap.next((m) => m.session === s.id && m.type === 'event' && m.event === 'initialized', from, 'the vCPU session initialized');
  await waitFor('the vCPU session running after configurationDone', async () => {
    const t = (await s.customRequest('threads')) as { threads: { id: number; name: string }[] };
    return t.threads.length > 0 ? t : undefined;
  }, 60_000).then((t) => out.log(`vCPU session threads: ${t.threads.map((x) => x.name).join(', ')}`));
  const t = (await s.customRequest('threads')) as { threads: { id: number }[] };
  const before = dap.messages.length;
  await s.customRequest('pause', { threadId: t.threads[0].id });
  await dap.next((m) => m.session === s.id && m.type === 'event' && m.event === 'stopped', before, 'the vCPU session stopped by pause');
  const during = await waitFor('worker vCPU 1 debug-stopped in the Partitions view', () => {
    const w = api.partitions()?.partitions.find((p) => p.name === 'worker');
    return w && w.vcpus[1]?.state === 'stopped_in_debugger' ? w : undefined;
  });
  out.log(`paused vCPU 1: worker vCPUs ${during.vcpus.map((v) => `${v.index}=${v.state}`).join(', ')}`);
  check(during.vcpus[0].state !== 'stopped_in_debugger', 'worker vCPU 0 stopped too');
  const ended = new Promise<void>((r) => {
    const d = vscode.debug.onDidTerminateDebugSession((x) => {
      if (x.id === s.id) {
        d.dispose();
        r();
      }
    });
  });
  await vscode.debug.stopDebugging(s);
  await ended;
  const after = await waitFor('worker vCPU 1 running on after the disconnect', () => {
    const w = api.partitions()?.partitions.find((p) => p.name === 'worker');
    return w && w.vcpus.every((v) => v.state !== 'stopped_in_debugger') ? w : undefined;
  });
  out.log(`vCPU session ended: worker vCPUs ${after.vcpus.map((v) => `${v.index}=${v.state}`).join(', ')}`);
}

function describe(s: Snapshot): string {
  return s.partitions.map((p) => `${p.name}=${p.state_text}[${p.vcpus.map((v) => v.state).join(',')}]`).join(' ');
}

async function languageServer(api: HvdkApi, out: Steps, root: string): Promise<void> {
  const running = await waitFor('the hv lsp client', () => (api.languageServerRunning() ? true : undefined), 60_000);
  out.log(`language client running: ${running}`);
  // examples/demo.toml opened, then broken in an unsaved copy: the repository's file is never
  // written (the server treats an unsaved TOML file with a [system] table as a description).
  const demo = vscode.Uri.file(path.join(root, 'examples/demo.toml'));
  const original = fs.readFileSync(demo.fsPath, 'utf8');
  const demoDoc = await vscode.workspace.openTextDocument(demo);
  await vscode.window.showTextDocument(demoDoc);
  await sleep(3000);
  const clean = vscode.languages.getDiagnostics(demo);
  out.log(`diagnostics on examples/demo.toml: ${clean.length}${clean.length ? ` (${clean.map((d) => d.message.split('\n')[0]).join('; ')})` : ''}`);
  check(clean.every((d) => d.severity !== vscode.DiagnosticSeverity.Error), 'errors reported on the intact demo.toml');
  const broken = original.replace('served_by = "sensor-model"', 'served_by = "sensor-modle"');
  check(broken !== original, 'served_by = "sensor-model" not found in demo.toml');
  const doc = await vscode.workspace.openTextDocument({ language: 'toml', content: broken });
  await vscode.window.showTextDocument(doc);
  const uri = doc.uri;
  const at = broken.indexOf('served_by = "sensor-modle"') + 'served_by = "'.length;
  const start = doc.positionAt(at);
  try {
    const diags = await waitFor('a diagnostic on the broken served_by', () => {
      const d = vscode.languages.getDiagnostics(uri).filter((x) => x.range.start.line === start.line);
      return d.length > 0 ? d : undefined;
    }, 60_000);
    const d = diags[0];
    out.log(`diagnostic: ${d.range.start.line + 1}:${d.range.start.character + 1}-${d.range.end.line + 1}:${d.range.end.character + 1} ${vscode.DiagnosticSeverity[d.severity]}: ${d.message.split('\n')[0]}`);
    check(d.severity === vscode.DiagnosticSeverity.Error, 'the diagnostic is not an error');
    check(d.message.includes('sensor-modle'), `the diagnostic does not name the bad partition: ${d.message}`);
    check(d.range.start.character <= start.character && d.range.end.character >= start.character + 'sensor-modle'.length, 'the diagnostic does not cover the bad name');
    // Completion: the partition names in the value of served_by.
    const list = (await vscode.commands.executeCommand('vscode.executeCompletionItemProvider', uri, start.translate(0, 1))) as vscode.CompletionList;
    const labels = list.items.map((i) => (typeof i.label === 'string' ? i.label : i.label.label));
    out.log(`completion in served_by: ${labels.slice(0, 12).join(', ')}`);
    check(labels.some((l) => l.includes('sensor-model')), 'no partition names completed in served_by');
  } finally {
    await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor');
    if (fs.readFileSync(demo.fsPath, 'utf8') !== original) {
      fs.writeFileSync(demo.fsPath, original); // never leave the repository changed
      throw new Error('examples/demo.toml was changed on disk during the test (restored)');
    }
    out.log('the unsaved copy closed; examples/demo.toml unchanged on disk');
  }
}

export async function run(): Promise<void> {
  const out = new Steps();
  try {
    const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '';
    out.log(`workspace ${root}`);
    const ext = vscode.extensions.getExtension<HvdkApi>('hvdk.hvdk');
    check(ext !== undefined, 'the hvdk extension is not installed');
    out.log(`extension ${ext!.id} ${String(ext!.packageJSON.version)} from ${ext!.extensionPath}`);
    const api = await ext!.activate();
    out.log(`activated; hv = ${api.hvPath()}`);
    check(api.hvPath() === env('HVDK_TEST_HV'), `hv path is ${api.hvPath()}, expected ${env('HVDK_TEST_HV')}`);
    const pkg = ext!.packageJSON as { contributes: { debuggers: { type: string }[]; views: Record<string, { id: string }[]> } };
    check(pkg.contributes.debuggers.some((d) => d.type === 'hv'), 'no hv debug type');
    check(Object.values(pkg.contributes.views).flat().some((v) => v.id === 'hvdk.partitions'), 'no Partitions view');
    const cmds = await vscode.commands.getCommands(true);
    for (const c of ['hvdk.debugPartition', 'hvdk.debugVcpu', 'hvdk.pause', 'hvdk.resume', 'hvdk.reset', 'hvdk.openConsole']) {
      check(cmds.includes(c), `command ${c} missing`);
    }
    out.log('debug type, view and commands registered');

    if (env('HVDK_TEST_LSP') === '1') {
      await languageServer(api, out, root);
    } else {
      out.skipped.push(`language server: ${env('HVDK_TEST_LSP_REASON') || 'hv lsp not available'}`);
    }
    if (env('HVDK_TEST_KVM') === '1') {
      await debugDeviceModel(api, out, root);
    } else {
      out.skipped.push(`debug session on the demo: ${env('HVDK_TEST_KVM_REASON') || 'no /dev/kvm'}`);
    }
    out.pass = true;
  } catch (e) {
    out.error = e instanceof Error ? (e.stack ?? e.message) : String(e);
  }
  out.done = true;
  out.save();
  if (!out.pass) {
    throw new Error(out.error);
  }
}
