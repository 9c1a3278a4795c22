// The Partitions view: a long-running `hv console --batch` feeds snapshots of the running
// system; the tree shows each partition (state, vCPUs, CPU %, IRQs/s) and its vCPUs.
import { ChildProcess, spawn } from 'child_process';
import * as readline from 'readline';
import * as vscode from 'vscode';

import { findHv, hvCwd, linkArgs } from './hv';
import { PartitionRow, Snapshot, VcpuRow, parseSnapshot, partitionDescription, partitionStateText, pct, vcpuStateText } from './snapshot';

/** Follows the running system with `hv console --batch`, restarting it while none runs. */
export class PartitionsModel implements vscode.Disposable {
  private child: ChildProcess | undefined;
  private retry: NodeJS.Timeout | undefined;
  private disposed = false;
  private current: Snapshot | undefined;
  private lastError = '';
  private readonly changed = new vscode.EventEmitter<Snapshot | undefined>();
  /** Fires with every snapshot, and with undefined when the system goes away. */
  readonly onDidChange = this.changed.event;

  constructor(private readonly log: vscode.LogOutputChannel) {}

  /** The latest snapshot (undefined while no system runs). */
  get snapshot(): Snapshot | undefined {
    return this.current;
  }

  /** Why there is no snapshot (the last error of `hv console`). */
  get error(): string {
    return this.lastError;
  }

  /** Starts following (again, at once). */
  restart(): void {
    if (this.disposed) {
      return;
    }
    if (this.retry) {
      clearTimeout(this.retry);
      this.retry = undefined;
    }
    if (this.child) {
      const old = this.child;
      this.child = undefined;
      old.kill();
    }
    this.start();
  }

  private start(): void {
    const hv = findHv();
    const interval = vscode.workspace.getConfiguration('hvdk').get<number>('refreshIntervalMs', 1000);
    const args = ['console', ...linkArgs(), '--batch', '--format', 'json', '--interval', String(Math.max(100, interval))];
    let child: ChildProcess;
    try {
      child = spawn(hv.path, args, { cwd: hvCwd(), stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      this.stopped(`cannot run ${hv.path}: ${String(e)}`);
      return;
    }
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    if (child.stdout) {
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        const s = parseSnapshot(line);
        if (s && this.child === child) {
          if (!this.current) {
            this.log.appendLine(`partitions: following system ${s.system} (${s.partitions.length} partitions)`);
          }
          this.current = s;
          this.lastError = '';
          this.changed.fire(s);
        }
      });
    }
    child.on('error', (e) => {
      if (this.child === child) {
        this.stopped(`cannot run ${hv.path} (${hv.source}): ${e.message}`);
      }
    });
    child.on('exit', () => {
      if (this.child === child) {
        const msg = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
        this.stopped((msg.find((l) => l.startsWith('hv: error:')) ?? msg[msg.length - 1] ?? 'hv console ended').replace(/^hv: error:\s*/, ''));
      }
    });
  }

  private stopped(reason: string): void {
    this.child = undefined;
    if (reason !== this.lastError) {
      this.log.appendLine(`partitions: ${reason}`);
    }
    this.lastError = reason;
    if (this.current) {
      this.current = undefined;
      this.changed.fire(undefined);
    }
    if (!this.disposed) {
      this.retry = setTimeout(() => {
        this.retry = undefined;
        this.start();
      }, 2000);
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.retry) {
      clearTimeout(this.retry);
    }
    this.child?.kill();
    this.child = undefined;
    this.changed.dispose();
  }
}

/** A node of the Partitions tree. */
export type PartitionsNode =
  | { kind: 'partition'; partition: PartitionRow }
  | { kind: 'vcpu'; partition: PartitionRow; vcpu: VcpuRow };

function stateIcon(state: string): vscode.ThemeIcon {
  switch (state) {
    case 'running':
      return new vscode.ThemeIcon('play-circle', new vscode.ThemeColor('debugIcon.startForeground'));
    case 'halted':
      return new vscode.ThemeIcon('circle-outline');
    case 'paused':
      return new vscode.ThemeIcon('debug-pause', new vscode.ThemeColor('debugIcon.pauseForeground'));
    case 'stopped_in_debugger':
      return new vscode.ThemeIcon('debug-breakpoint-unsupported', new vscode.ThemeColor('debugIcon.breakpointForeground'));
    case 'blocked_on_device':
      return new vscode.ThemeIcon('watch', new vscode.ThemeColor('problemsWarningIcon.foreground'));
    case 'crashed':
      return new vscode.ThemeIcon('error', new vscode.ThemeColor('problemsErrorIcon.foreground'));
    case 'exited':
    case 'stopped':
      return new vscode.ThemeIcon('circle-slash');
    default:
      return new vscode.ThemeIcon('circle-filled');
  }
}

/** The tree data of the Partitions view. */
export class PartitionsTree implements vscode.TreeDataProvider<PartitionsNode> {
  private readonly changed = new vscode.EventEmitter<PartitionsNode | undefined>();
  readonly onDidChangeTreeData = this.changed.event;

  constructor(private readonly model: PartitionsModel) {
    model.onDidChange(() => this.changed.fire(undefined));
  }

  getChildren(node?: PartitionsNode): PartitionsNode[] {
    const s = this.model.snapshot;
    if (!s) {
      return [];
    }
    if (!node) {
      return s.partitions.map((partition) => ({ kind: 'partition', partition }));
    }
    if (node.kind === 'partition') {
      // Children come from the latest snapshot, not the (older) node.
      const p = s.partitions.find((q) => q.name === node.partition.name) ?? node.partition;
      return p.vcpus.map((vcpu) => ({ kind: 'vcpu', partition: p, vcpu }));
    }
    return [];
  }

  getTreeItem(node: PartitionsNode): vscode.TreeItem {
    if (node.kind === 'partition') {
      const p = node.partition;
      const item = new vscode.TreeItem(p.name, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `partition:${p.name}`;
      item.description = partitionDescription(p);
      item.iconPath = stateIcon(p.vcpus.some((v) => v.state === 'blocked_on_device') ? 'blocked_on_device' : p.state);
      item.contextValue = `partition.${p.state}`;
      item.tooltip = new vscode.MarkdownString(
        `**${p.name}** (partition ${p.id}): ${partitionStateText(p)}\n\n` +
          `CPU ${pct(p.cpu_pct)} · exits ${p.exits_per_s?.toFixed(0) ?? '–'}/s · IRQs ${p.irqs_per_s?.toFixed(0) ?? '–'}/s · ` +
          `hypercalls ${p.hypercalls_per_s?.toFixed(0) ?? '–'}/s`,
      );
      return item;
    }
    const v = node.vcpu;
    const item = new vscode.TreeItem(`vCPU ${v.index}`, vscode.TreeItemCollapsibleState.None);
    item.id = `vcpu:${node.partition.name}:${v.index}`;
    item.description = `${vcpuStateText(v)} · CPU ${pct(v.cpu_pct)}`;
    item.iconPath = stateIcon(v.state);
    item.contextValue = 'vcpu';
    return item;
  }

  dispose(): void {
    this.changed.dispose();
  }
}
