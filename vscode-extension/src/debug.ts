// The `hv` debug type: launch.json configurations completed from a quick pick of the running
// system's (or the description's) partitions and vCPUs, and the adapter started as `hv dap`.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as vscode from 'vscode';

import { currentLink, findHv, hvCwd, snapshotOnce } from './hv';
import { DescribedPartition, Snapshot, describedPartitions, hasSystemTable, vcpuStateText } from './snapshot';

/** A partition (and optionally one vCPU) picked by the user. */
export interface Target {
  partition: string;
  vcpu?: number;
}

interface TargetItem extends vscode.QuickPickItem {
  target: Target;
}

function itemsFromSnapshot(s: Snapshot): TargetItem[] {
  const items: TargetItem[] = [];
  for (const p of s.partitions) {
    items.push({ label: p.name, description: p.state_text, detail: `${p.vcpus.length} vCPU(s): the whole partition`, target: { partition: p.name } });
    if (p.vcpus.length > 1) {
      for (const v of p.vcpus) {
        items.push({ label: `${p.name} · vCPU ${v.index}`, description: vcpuStateText(v), detail: 'this vCPU alone; its siblings keep running', target: { partition: p.name, vcpu: v.index } });
      }
    }
  }
  return items;
}

function itemsFromDescription(parts: DescribedPartition[]): TargetItem[] {
  const items: TargetItem[] = [];
  for (const p of parts) {
    items.push({ label: p.name, description: `${p.vcpus} vCPU(s)`, target: { partition: p.name } });
    if (p.vcpus > 1) {
      for (let v = 0; v < p.vcpus; v++) {
        items.push({ label: `${p.name} · vCPU ${v}`, description: 'this vCPU alone', target: { partition: p.name, vcpu: v } });
      }
    }
  }
  return items;
}

/** Asks for a partition or vCPU among `items`; undefined when cancelled. */
async function pickTarget(items: TargetItem[], title: string): Promise<Target | undefined> {
  const picked = await vscode.window.showQuickPick(items, { title, placeHolder: 'Partition or vCPU to debug', matchOnDescription: true });
  return picked?.target;
}

function expand(value: string, folder: vscode.WorkspaceFolder | undefined): string {
  const root = folder?.uri.fsPath ?? hvCwd() ?? '';
  return value.replace(/\$\{workspaceFolder\}/g, root);
}

function readDescription(file: string): DescribedPartition[] {
  try {
    return describedPartitions(fs.readFileSync(file, 'utf8'));
  } catch {
    return [];
  }
}

/** The system description open in the editor, if the active file is one. */
function activeDescription(): string | undefined {
  const doc = vscode.window.activeTextEditor?.document;
  if (doc && doc.uri.scheme === 'file' && doc.fileName.endsWith('.toml') && path.basename(doc.fileName) !== 'Cargo.toml' && hasSystemTable(doc.getText())) {
    return doc.fileName;
  }
  return undefined;
}

/** Completes `hv` debug configurations. */
export class HvConfigurationProvider implements vscode.DebugConfigurationProvider {
  provideDebugConfigurations(folder: vscode.WorkspaceFolder | undefined): vscode.DebugConfiguration[] {
    const demo = folder && fs.existsSync(path.join(folder.uri.fsPath, 'examples', 'demo.toml'));
    return [
      {
        type: 'hv',
        request: 'launch',
        name: 'hv: debug sensor-model (demo)',
        system: demo ? '${workspaceFolder}/examples/demo.toml' : '${workspaceFolder}/system.toml',
        partition: 'sensor-model',
      },
      { type: 'hv', request: 'attach', name: 'hv: attach to a partition of the running system', partition: '' },
    ];
  }

  async resolveDebugConfiguration(folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration): Promise<vscode.DebugConfiguration | undefined | null> {
    // F5 without a launch.json: debug a partition of the running system, else of the open description.
    let generatedName = !config.name;
    if (!config.type && !config.request && !config.name) {
      generatedName = true;
      const running = await snapshotOnce();
      if (typeof running !== 'string') {
        config = { type: 'hv', request: 'attach', name: `hv: attach (${running.system})` };
      } else {
        const system = activeDescription();
        if (!system) {
          await vscode.window.showErrorMessage(`hvdk: no system is running (${running}), and the active file is not a system description. Open one (e.g. examples/demo.toml) or add an "hv" configuration to launch.json.`);
          return undefined;
        }
        config = { type: 'hv', request: 'launch', name: `hv: ${path.basename(system)}`, system };
      }
    }
    if (config.request === 'launch' && typeof config.system !== 'string') {
      const system = activeDescription();
      if (!system) {
        await vscode.window.showErrorMessage('hvdk: a "launch" configuration needs "system", the path of a system description (e.g. ${workspaceFolder}/examples/demo.toml).');
        return undefined;
      }
      config.system = system;
    }
    if (typeof config.partition !== 'string' || config.partition === '') {
      let target: Target | undefined;
      if (config.request === 'launch') {
        const file = expand(String(config.system), folder);
        const parts = readDescription(file);
        if (parts.length === 0) {
          await vscode.window.showErrorMessage(`hvdk: no [[partition]] found in ${file}.`);
          return undefined;
        }
        target = await pickTarget(itemsFromDescription(parts), `Debug a partition of ${path.basename(file)}`);
      } else {
        const s = await snapshotOnce(typeof config.link === 'string' ? config.link : undefined);
        if (typeof s === 'string') {
          await vscode.window.showErrorMessage(`hvdk: cannot list the running system's partitions: ${s}`);
          return undefined;
        }
        target = await pickTarget(itemsFromSnapshot(s), `Debug a partition of ${s.system}`);
      }
      if (!target) {
        return undefined; // cancelled
      }
      config.partition = target.partition;
      if (target.vcpu !== undefined) {
        config.vcpu = target.vcpu;
      }
      if (generatedName || !String(config.name).includes(target.partition)) {
        // The picked target names the session (the Call Stack shows it).
        config.name = `hv: ${target.partition}${target.vcpu !== undefined ? ` vCPU ${target.vcpu}` : ''}`;
      }
    }
    if (config.request === 'attach' && (typeof config.link !== 'string' || config.link === '') && currentLink() !== '') {
      // The system the view follows (a launch session's, or hvdk.link), as in the quick pick.
      config.link = currentLink();
    }
    if (config.request === 'launch' && (typeof config.link !== 'string' || config.link === '')) {
      // A link the extension knows, so the Partitions view, consoles and controls follow the
      // system this session starts (hv dap's default is a private socket nobody else can find).
      launchCount += 1;
      config.link = `unix:${path.join(os.tmpdir(), `hvdk-vscode-${process.pid}-${launchCount}.sock`)}`;
    }
    return config;
  }
}

let launchCount = 0;

/** Offers "attach to <partition>" for each partition of the running system (the Run view's list). */
export class HvDynamicConfigurationProvider implements vscode.DebugConfigurationProvider {
  async provideDebugConfigurations(): Promise<vscode.DebugConfiguration[]> {
    const s = await snapshotOnce();
    if (typeof s === 'string') {
      return [];
    }
    return s.partitions.map((p) => ({ type: 'hv', request: 'attach', name: `hv: attach ${p.name} (${s.system})`, partition: p.name }));
  }
}

/** Starts the adapter: `<hv> dap` on stdio, in the workspace folder. */
export class HvAdapterFactory implements vscode.DebugAdapterDescriptorFactory {
  constructor(private readonly log: vscode.LogOutputChannel) {}

  createDebugAdapterDescriptor(session: vscode.DebugSession): vscode.DebugAdapterDescriptor {
    const hv = findHv();
    const cwd = session.workspaceFolder?.uri.fsPath ?? hvCwd();
    this.log.appendLine(`debug: ${session.name}: starting ${hv.path} dap (${hv.source})${cwd ? ` in ${cwd}` : ''}`);
    return new vscode.DebugAdapterExecutable(hv.path, ['dap'], cwd ? { cwd } : {});
  }
}

/** Starts a debug session on a partition (or one vCPU) of the running system. */
export function debugTarget(target: Target): Thenable<boolean> {
  const folder = vscode.workspace.workspaceFolders?.[0];
  const link = currentLink();
  const config: vscode.DebugConfiguration = {
    type: 'hv',
    request: 'attach',
    name: `hv: ${target.partition}${target.vcpu !== undefined ? ` vCPU ${target.vcpu}` : ''}`,
    partition: target.partition,
    ...(target.vcpu !== undefined ? { vcpu: target.vcpu } : {}),
    ...(link !== '' ? { link } : {}),
  };
  return vscode.debug.startDebugging(folder, config);
}
