// Finding the `hv` binary (setting `hvdk.hvPath`, else the workspace's build, else PATH) and
// running its one-shot subcommands.
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';

import { Snapshot, parseSnapshot } from './snapshot';

/** Where `hv` comes from, for messages. */
export interface HvBinary {
  path: string;
  source: 'setting' | 'workspace' | 'PATH';
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function expandVariables(value: string): string {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? '';
  return value.replace(/\$\{workspaceFolder\}/g, folder).replace(/^~(?=\/|$)/, process.env.HOME ?? '~');
}

/**
 * The `hv` binary: `hvdk.hvPath` when set; else `target/release/hv`, then `target/debug/hv`, of a
 * workspace folder; else `hv` on PATH.
 */
export function findHv(): HvBinary {
  const setting = vscode.workspace.getConfiguration('hvdk').get<string>('hvPath', '').trim();
  if (setting !== '') {
    return { path: expandVariables(setting), source: 'setting' };
  }
  for (const folder of vscode.workspace.workspaceFolders ?? []) {
    for (const profile of ['release', 'debug']) {
      const candidate = path.join(folder.uri.fsPath, 'target', profile, 'hv');
      if (isExecutable(candidate)) {
        return { path: candidate, source: 'workspace' };
      }
    }
  }
  return { path: 'hv', source: 'PATH' };
}

let followed: string | undefined;

/**
 * Makes `link` (the host link of the system an `hv` debug session runs or attached to) the one
 * the view, consoles, controls and quick picks talk to; undefined goes back to the setting.
 */
export function followLink(link: string | undefined): void {
  followed = link;
}

/** The link in use: a debug session's, else the `hvdk.link` setting ('' = the only running system). */
export function currentLink(): string {
  return followed ?? vscode.workspace.getConfiguration('hvdk').get<string>('link', '').trim();
}

/** The `--connect` arguments for `link` (default: the current link; none: the only running system). */
export function linkArgs(link?: string): string[] {
  const value = link ?? currentLink();
  return value === '' ? [] : ['--connect', value];
}

/** The working directory for `hv` (the first workspace folder). */
export function hvCwd(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

/** Output of a finished `hv` run. */
export interface HvResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `hv args…` to its end (at most `timeoutMs`). */
export function runHv(args: string[], timeoutMs = 15000): Promise<HvResult> {
  const hv = findHv();
  return new Promise((resolve) => {
    execFile(hv.path, args, { cwd: hvCwd(), timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      let code = 0;
      if (err) {
        const e = err as NodeJS.ErrnoException & { code?: number | string };
        if (e.code === 'ENOENT') {
          resolve({ code: 127, stdout: '', stderr: `cannot run ${hv.path} (${hv.source}): not found; set hvdk.hvPath or build it with cargo build --release` });
          return;
        }
        code = typeof e.code === 'number' ? e.code : 1;
      }
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The last error line of `hv`'s stderr, without its `hv: error:` prefix. */
export function hvError(r: HvResult): string {
  const lines = r.stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const first = lines.find((l) => l.startsWith('hv: error:')) ?? lines[lines.length - 1] ?? `exit status ${r.code}`;
  return first.replace(/^hv: error:\s*/, '');
}

/** One snapshot of the running system, or the reason there is none. */
export async function snapshotOnce(link?: string): Promise<Snapshot | string> {
  const r = await runHv(['console', ...linkArgs(link), '--batch', '--format', 'json', '--count', '1', '--interval', '100']);
  if (r.code !== 0) {
    return hvError(r);
  }
  for (const line of r.stdout.split('\n')) {
    const s = parseSnapshot(line);
    if (s) {
      return s;
    }
  }
  return 'hv console printed no snapshot';
}
