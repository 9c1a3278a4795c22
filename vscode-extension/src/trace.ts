// "hv: Open Trace": the trace viewer (`hv trace view FILE`, a local web server) in a webview. The
// trace is a .hvt file, or N seconds of the running system recorded first (`hv trace record`).
// The viewer's page runs in an iframe of the webview; when a slice with a guest rip is selected
// the page resolves the rip to a source line (the partition's ELF and DWARF, server-side) and its
// "Open in editor" button posts {type: 'hv-open-source', file, line} here: the line opens.
import { ChildProcess, spawn } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as vscode from 'vscode';

import { findHv, hvCwd, hvError, linkArgs, runHv } from './hv';

/** An open trace: its file, the viewer's URL and the webview panel showing it. */
export interface TraceView {
  file: string;
  url: string;
  panel: vscode.WebviewPanel;
}

/** How long the viewer may take to index a trace before printing its URL. */
const START_TIMEOUT_MS = 300_000;

/** Asks for a trace (a file, or a recording of the running system) unless `arg` names one. */
async function chooseTrace(arg: unknown): Promise<string | undefined> {
  if (typeof arg === 'string' && arg !== '') {
    return arg;
  }
  if (arg instanceof vscode.Uri) {
    return arg.fsPath;
  }
  const pick = await vscode.window.showQuickPick(
    [
      { label: 'Open a trace file (.hvt)…', id: 'file' },
      { label: 'Record the running system…', id: 'record' },
    ],
    { placeHolder: 'hv: Open Trace' },
  );
  if (!pick) {
    return undefined;
  }
  if (pick.id === 'file') {
    const uris = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'hvdk traces': ['hvt', 'hvtrace'] } });
    return uris?.[0]?.fsPath;
  }
  const seconds = await vscode.window.showInputBox({
    prompt: 'Seconds of the running system to record',
    value: '5',
    validateInput: (v) => (/^\d+(\.\d+)?$/.test(v.trim()) && Number(v) > 0 ? undefined : 'a number of seconds'),
  });
  if (!seconds) {
    return undefined;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hvdk-trace-'));
  const file = path.join(dir, `recording-${Date.now()}.hvt`);
  const r = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `hv: recording ${seconds.trim()} s of the running system` },
    () => runHv(['trace', 'record', file, ...linkArgs(), '--duration', seconds.trim()], (Number(seconds) + 60) * 1000),
  );
  if (r.code !== 0) {
    void vscode.window.showErrorMessage(`hv: cannot record the trace: ${hvError(r)}`);
    return undefined;
  }
  return file;
}

/** Starts `hv trace view FILE --port 0`; resolves with the URL it prints. */
function startViewer(file: string, log: vscode.LogOutputChannel): Promise<{ child: ChildProcess; url: string }> {
  const hv = findHv();
  const child = spawn(hv.path, ['trace', 'view', file, '--port', '0'], { cwd: hvCwd(), stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`hv trace view printed no URL in ${START_TIMEOUT_MS / 1000} s: ${seen.trim()}`));
    }, START_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${hv.path} (${hv.source}): ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(seen.trim().split('\n').pop() || `hv trace view exited (${code})`));
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      for (const line of seen.split('\n')) {
        const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
        if (m) {
          clearTimeout(timer);
          log.info(`trace: ${line.trim()}`);
          child.removeAllListeners('exit');
          resolve({ child, url: m[1] });
          return;
        }
      }
    });
  });
}

/** The webview's page: the viewer in an iframe, and the bridge for its messages. */
function webviewHtml(url: string, cspSource: string): string {
  const origin = new URL(url).origin;
  const nonce = crypto.randomBytes(16).toString('base64');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; frame-src ${origin}; style-src ${cspSource} 'unsafe-inline'; script-src 'nonce-${nonce}';">
<style>html, body { margin: 0; padding: 0; height: 100%; overflow: hidden; } iframe { border: 0; width: 100%; height: 100%; }</style>
</head><body>
<iframe id="trace" src="${url}" title="hv trace viewer"></iframe>
<script nonce="${nonce}">
  const vscode = acquireVsCodeApi();
  window.addEventListener('message', (e) => {
    if (e.origin === ${JSON.stringify(origin)} && e.data && e.data.type === 'hv-open-source') vscode.postMessage(e.data);
  });
</script>
</body></html>`;
}

/** Opens `file` at `line` (1-based) in an editor beside the trace. */
async function openSource(file: string, line: number): Promise<void> {
  if (!fs.existsSync(file)) {
    void vscode.window.showErrorMessage(`hv: the source file ${file} is not on this machine.`);
    return;
  }
  const doc = await vscode.workspace.openTextDocument(file);
  const at = new vscode.Position(Math.max(0, line - 1), 0);
  await vscode.window.showTextDocument(doc, { viewColumn: vscode.ViewColumn.Beside, selection: new vscode.Range(at, at) });
}

/** The "hv: Open Trace" command. */
export async function openTrace(arg: unknown, log: vscode.LogOutputChannel): Promise<TraceView | undefined> {
  const file = await chooseTrace(arg);
  if (!file) {
    return undefined;
  }
  let viewer: { child: ChildProcess; url: string };
  try {
    viewer = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `hv: opening ${path.basename(file)}` },
      () => startViewer(file, log),
    );
  } catch (e) {
    void vscode.window.showErrorMessage(`hv: cannot open the trace: ${(e as Error).message}`);
    return undefined;
  }
  // The webview loads the viewer straight from 127.0.0.1 (the viewer refuses other host names,
  // so a proxied URL would not do): VS Code and its browser run on this machine.
  const panel = vscode.window.createWebviewPanel('hvdk.trace', `Trace: ${path.basename(file)}`, vscode.ViewColumn.Active, {
    enableScripts: true,
    retainContextWhenHidden: true,
  });
  panel.webview.html = webviewHtml(viewer.url, panel.webview.cspSource);
  panel.webview.onDidReceiveMessage((m: { type?: string; file?: string; line?: number }) => {
    if (m.type === 'hv-open-source' && typeof m.file === 'string' && typeof m.line === 'number') {
      log.info(`trace: open ${m.file}:${m.line}`);
      void openSource(m.file, m.line);
    }
  });
  panel.onDidDispose(() => viewer.child.kill('SIGINT'));
  return { file, url: viewer.url, panel };
}
