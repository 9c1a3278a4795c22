// The hvdk extension: the `hv` debug type (adapter `hv dap`), the live Partitions view with its
// actions, partition consoles as terminals, the `hv lsp` client for system descriptions, and
// "hv: Open Trace" (the trace viewer in a webview).
import * as vscode from 'vscode';

import { openConsole } from './console';
import { HvAdapterFactory, HvConfigurationProvider, HvDynamicConfigurationProvider, Target, debugTarget } from './debug';
import { findHv, followLink, hvError, linkArgs, runHv } from './hv';
import { SystemDescriptionClient } from './lsp';
import { PartitionsModel, PartitionsNode, PartitionsTree } from './partitions';
import { Snapshot } from './snapshot';
import { openTrace } from './trace';

/** What the extension returns from `activate` (used by its tests, and by other extensions). */
export interface HvdkApi {
  /** The Partitions view's latest snapshot of the running system. */
  partitions(): Snapshot | undefined;
  /** Fires on every snapshot (undefined: the system went away). */
  onDidChangePartitions: vscode.Event<Snapshot | undefined>;
  /** The `hv` binary in use. */
  hvPath(): string;
  /** True while the `hv lsp` client runs. */
  languageServerRunning(): boolean;
}

/** The partition (and vCPU) a command was invoked on: a tree node, or asked for. */
async function targetOf(arg: unknown, model: PartitionsModel, withVcpus: boolean): Promise<Target | undefined> {
  if (typeof arg === 'string') {
    return { partition: arg };
  }
  if (typeof arg === 'object' && arg !== null && 'kind' in arg) {
    const node = arg as PartitionsNode;
    return node.kind === 'vcpu' ? { partition: node.partition.name, vcpu: node.vcpu.index } : { partition: node.partition.name };
  }
  const s = model.snapshot;
  if (!s) {
    void vscode.window.showErrorMessage(`hvdk: no system is running (${model.error || 'no snapshot yet'}).`);
    return undefined;
  }
  const items: (vscode.QuickPickItem & { target: Target })[] = [];
  for (const p of s.partitions) {
    items.push({ label: p.name, description: p.state_text, target: { partition: p.name } });
    if (withVcpus) {
      for (const v of p.vcpus) {
        items.push({ label: `${p.name} · vCPU ${v.index}`, description: v.state, target: { partition: p.name, vcpu: v.index } });
      }
    }
  }
  return (await vscode.window.showQuickPick(items, { placeHolder: 'Partition' }))?.target;
}

async function control(action: 'pause' | 'resume' | 'reset', partition: string, model: PartitionsModel): Promise<boolean> {
  const r = await runHv(['control', ...linkArgs(), action, partition]);
  if (r.code !== 0) {
    void vscode.window.showErrorMessage(`hvdk: cannot ${action} ${partition}: ${hvError(r)}`);
    return false;
  }
  model.restart(); // show the new state at once
  return true;
}

export function activate(context: vscode.ExtensionContext): HvdkApi {
  const log = vscode.window.createOutputChannel('hvdk', { log: true });
  const model = new PartitionsModel(log);
  const tree = new PartitionsTree(model);
  const lsp = new SystemDescriptionClient(log);
  log.appendLine(`hvdk: activated; hv is ${findHv().path} (${findHv().source})`);

  const view = vscode.window.createTreeView('hvdk.partitions', { treeDataProvider: tree, showCollapseAll: true });
  model.onDidChange((s) => {
    view.description = s ? s.system : undefined;
    // The welcome content covers "no system running"; other reasons (a bad hv path, a refused
    // link, several systems) are shown above it.
    view.message = s || !model.error || model.error.startsWith('no hvdk system is running') ? undefined : model.error;
  });

  context.subscriptions.push(
    log,
    model,
    tree,
    view,
    lsp,
    vscode.debug.registerDebugConfigurationProvider('hv', new HvConfigurationProvider()),
    vscode.debug.registerDebugConfigurationProvider('hv', new HvDynamicConfigurationProvider(), vscode.DebugConfigurationProviderTriggerKind.Dynamic),
    vscode.debug.registerDebugAdapterDescriptorFactory('hv', new HvAdapterFactory(log)),
    vscode.debug.onDidStartDebugSession((s) => {
      if (s.type === 'hv') {
        // Follow the system this session runs or attached to, at once.
        const link = typeof s.configuration.link === 'string' && s.configuration.link !== '' ? s.configuration.link : undefined;
        if (link) {
          followLink(link);
          log.info(`partitions: following the link of ${s.name}: ${link}`);
        }
        model.restart();
      }
    }),
    vscode.debug.onDidTerminateDebugSession((s) => {
      if (s.type === 'hv' && s.configuration.request === 'launch') {
        // Its system stopped with it: follow another hv session's, else the setting's.
        const other = vscode.debug.activeDebugSession;
        followLink(other?.type === 'hv' && typeof other.configuration.link === 'string' ? other.configuration.link : undefined);
        model.restart();
      }
    }),
    vscode.commands.registerCommand('hvdk.partitions.refresh', () => model.restart()),
    vscode.commands.registerCommand('hvdk.debugPartition', async (arg: unknown) => {
      const t = await targetOf(arg, model, false);
      return t ? debugTarget({ partition: t.partition }) : false;
    }),
    vscode.commands.registerCommand('hvdk.debugVcpu', async (arg: unknown) => {
      const t = await targetOf(arg, model, true);
      return t ? debugTarget(t) : false;
    }),
    vscode.commands.registerCommand('hvdk.pause', async (arg: unknown) => {
      const t = await targetOf(arg, model, false);
      return t ? control('pause', t.partition, model) : false;
    }),
    vscode.commands.registerCommand('hvdk.resume', async (arg: unknown) => {
      const t = await targetOf(arg, model, false);
      return t ? control('resume', t.partition, model) : false;
    }),
    vscode.commands.registerCommand('hvdk.reset', async (arg: unknown) => {
      const t = await targetOf(arg, model, false);
      if (!t) {
        return false;
      }
      const ok = await vscode.window.showWarningMessage(`Reset partition ${t.partition}? Its guest restarts from its entry point.`, { modal: true }, 'Reset');
      return ok === 'Reset' ? control('reset', t.partition, model) : false;
    }),
    vscode.commands.registerCommand('hvdk.openConsole', async (arg: unknown) => {
      const t = await targetOf(arg, model, false);
      return t ? openConsole(t.partition).name : undefined;
    }),
    vscode.commands.registerCommand('hvdk.restartLanguageServer', () => lsp.restart()),
    vscode.commands.registerCommand('hvdk.openTrace', async (arg: unknown) => {
      const view = await openTrace(arg, log);
      if (view) {
        context.subscriptions.push(view.panel);
      }
      return view ? { file: view.file, url: view.url } : undefined;
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('hvdk.hvPath') || e.affectsConfiguration('hvdk.link') || e.affectsConfiguration('hvdk.refreshIntervalMs')) {
        model.restart();
      }
      if (e.affectsConfiguration('hvdk.hvPath') || e.affectsConfiguration('hvdk.languageServer.enable')) {
        void lsp.restart();
      }
    }),
  );

  model.restart();
  void lsp.start();

  return {
    partitions: () => model.snapshot,
    onDidChangePartitions: model.onDidChange,
    hvPath: () => findHv().path,
    languageServerRunning: () => lsp.languageClient?.isRunning() ?? false,
  };
}

export function deactivate(): void {
  // Everything is in context.subscriptions.
}
