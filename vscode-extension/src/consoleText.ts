// Text conversions between a guest's UART and a VS Code terminal (no vscode import: unit-tested).

/** Guest output uses bare `\n`; a terminal needs `\r\n`. */
export function toTerminalText(data: string): string {
  return data.replace(/\r?\n/g, '\r\n');
}

/** A terminal's keystrokes as guest UART bytes (Enter sends `\n`, as a serial console would). */
export function toGuestInput(data: string): string {
  return data.replace(/\r/g, '\n');
}
