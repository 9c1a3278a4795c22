// A partition's console as a VS Code terminal: `hv control attach-console <partition>` bridges
// the guest's UART to a pseudoterminal (what you type goes to the guest).
import { ChildProcess, spawn } from 'child_process';
import * as vscode from 'vscode';

import { toGuestInput, toTerminalText } from './consoleText';
import { findHv, hvCwd, linkArgs } from './hv';


/** The process behind one console terminal. */
class PartitionConsole {
  private readonly write = new vscode.EventEmitter<string>();
  readonly onDidWrite = this.write.event;
  private child: ChildProcess | undefined;

  constructor(private readonly partition: string) {}

  open(): void {
    const hv = findHv();
    this.write.fire(`\x1b[2m[hvdk] console of ${this.partition} (${hv.path} control attach-console); typing goes to its UART\x1b[0m\r\n`);
    const child = spawn(hv.path, ['control', ...linkArgs(), 'attach-console', this.partition], {
      cwd: hvCwd(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child = child;
    child.stdout?.on('data', (d: Buffer) => this.write.fire(toTerminalText(d.toString('utf8'))));
    child.stderr?.on('data', (d: Buffer) => this.write.fire(`\x1b[31m${toTerminalText(d.toString('utf8'))}\x1b[0m`));
    child.on('error', (e) => this.write.fire(`\x1b[31m[hvdk] cannot run ${hv.path}: ${e.message}\x1b[0m\r\n`));
    child.on('exit', (code) => {
      this.write.fire(`\r\n\x1b[2m[hvdk] console closed (${code === 0 ? 'the system stopped' : `exit status ${code}`})\x1b[0m\r\n`);
      this.child = undefined;
    });
  }

  handleInput(data: string): void {
    if (data === '\x04' && this.child) {
      this.child.stdin?.end(); // Ctrl-D closes the bridge
      return;
    }
    this.child?.stdin?.write(toGuestInput(data));
  }

  /** The user closed the terminal. */
  stop(): void {
    this.child?.kill();
    this.write.dispose();
  }
}

/** Opens (or shows) the terminal of `partition`'s console. */
export function openConsole(partition: string): vscode.Terminal {
  const name = `hv: ${partition}`;
  const existing = vscode.window.terminals.find((t) => t.name === name && t.exitStatus === undefined);
  if (existing) {
    existing.show();
    return existing;
  }
  const pty = new PartitionConsole(partition);
  const terminal = vscode.window.createTerminal({
    name,
    pty: {
      onDidWrite: pty.onDidWrite,
      open: () => pty.open(),
      close: () => pty.stop(),
      handleInput: (data: string) => pty.handleInput(data),
    },
    iconPath: new vscode.ThemeIcon('terminal'),
  });
  terminal.show();
  return terminal;
}
