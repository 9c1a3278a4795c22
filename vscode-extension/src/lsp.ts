// The language client: `hv lsp` over stdio for system descriptions (vscode-extension/lsp/README.md
// says which files are descriptions: the server decides, the client sends every *.toml).
import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, ServerOptions, State } from 'vscode-languageclient/node';

import { findHv, hvCwd } from './hv';

/** Starts and restarts the `hv lsp` client. */
export class SystemDescriptionClient implements vscode.Disposable {
  private client: LanguageClient | undefined;

  constructor(private readonly log: vscode.LogOutputChannel) {}

  /** The running client, if any (for tests). */
  get languageClient(): LanguageClient | undefined {
    return this.client;
  }

  /** Starts `hv lsp` unless `hvdk.languageServer.enable` is false; resolves when it runs or failed. */
  async start(): Promise<void> {
    const config = vscode.workspace.getConfiguration('hvdk');
    if (!config.get<boolean>('languageServer.enable', true)) {
      this.log.appendLine('lsp: disabled by hvdk.languageServer.enable');
      return;
    }
    const hv = findHv();
    const cwd = hvCwd();
    const serverOptions: ServerOptions = { command: hv.path, args: ['lsp'], options: cwd ? { cwd } : {} };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [
        { scheme: 'file', pattern: '**/*.toml' },
        { scheme: 'untitled', language: 'toml' },
      ],
      initializationOptions: { systemFiles: config.get<string[]>('systemFiles') },
      synchronize: { configurationSection: 'hvdk' },
      outputChannel: this.log,
      // A missing `hv lsp` is logged, not shown as a pop-up on every start.
      initializationFailedHandler: (e) => {
        this.log.appendLine(`lsp: initialization failed: ${String(e)}`);
        return false;
      },
    };
    const client = new LanguageClient('hvdk.lsp', 'hvdk system descriptions (hv lsp)', serverOptions, clientOptions);
    this.client = client;
    try {
      await client.start();
      this.log.appendLine(`lsp: started ${hv.path} lsp (${hv.source})`);
    } catch (e) {
      this.log.appendLine(`lsp: cannot start ${hv.path} lsp (${hv.source}): ${e instanceof Error ? e.message : String(e)}`);
      this.client = undefined;
    }
  }

  /** Stops the client (if running). */
  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client && client.state !== State.Stopped) {
      await client.stop().catch(() => undefined);
    }
  }

  /** Stops and starts again (after `hvdk.hvPath` changed, or by command). */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  dispose(): void {
    void this.stop();
  }
}
