//! Partition consoles: the 16550 UART (vm-superio) and `HV_CONSOLE_WRITE` both feed a line
//! splitter that publishes each line as a system event and keeps recent output for late readers.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};

use crate::bus::BusDevice;
use crate::events::{EventHub, SystemEvent};
use crate::irq::IrqLine;

/// Longest line kept before it is cut (a guest that never sends a newline must not grow memory).
pub const MAX_LINE: usize = 1024;
/// Bytes of recent raw output kept per partition.
pub const HISTORY: usize = 64 * 1024;

/// One partition's console output.
#[derive(Debug)]
pub struct Console {
    partition: usize,
    events: Arc<EventHub>,
    state: Mutex<ConsoleState>,
}

#[derive(Debug, Default)]
struct ConsoleState {
    line: Vec<u8>,
    history: VecDeque<u8>,
}

impl Console {
    /// A console publishing to `events` for partition index `partition`.
    pub fn new(partition: usize, events: Arc<EventHub>) -> Console {
        Console {
            partition,
            events,
            state: Mutex::default(),
        }
    }

    /// Feeds guest output.
    pub fn write(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.events.publish(SystemEvent::ConsoleOutput {
            partition: self.partition,
            bytes: bytes.to_vec(),
        });
        for &byte in bytes {
            if state.history.len() == HISTORY {
                state.history.pop_front();
            }
            state.history.push_back(byte);
            match byte {
                b'\n' => self.flush_line(&mut state),
                b'\r' => {}
                _ => {
                    state.line.push(byte);
                    if state.line.len() >= MAX_LINE {
                        self.flush_line(&mut state);
                    }
                }
            }
        }
    }

    fn flush_line(&self, state: &mut ConsoleState) {
        let line = String::from_utf8_lossy(&state.line).into_owned();
        state.line.clear();
        self.events.publish(SystemEvent::ConsoleLine {
            partition: self.partition,
            line,
        });
    }

    /// Recent raw output (up to `HISTORY` bytes).
    pub fn history(&self) -> Vec<u8> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.history.iter().copied().collect()
    }

    /// Publishes the line being printed, if any, as a complete line (when the guest crashed or
    /// exited: nothing more will end it).
    pub fn finish_line(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.line.is_empty() {
            self.flush_line(&mut state);
        }
    }

    /// Forgets partial lines (on reset).
    pub fn reset(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.line.clear();
    }
}

/// `io::Write` adapter from the UART to a `Console`.
#[derive(Debug)]
pub struct ConsoleWriter(pub Arc<Console>);

impl io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the UART vector on vCPU 0.
#[derive(Debug, Clone)]
pub struct UartTrigger(pub IrqLine);

impl Trigger for UartTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.raise();
        Ok(())
    }
}

/// The 16550 UART of a partition, on its port bus.
pub struct Uart(pub Serial<UartTrigger, vm_superio::serial::NoEvents, ConsoleWriter>);

impl Uart {
    /// A UART writing to `console` and interrupting through `line`.
    pub fn new(console: Arc<Console>, line: IrqLine) -> Uart {
        Uart(Serial::new(UartTrigger(line), ConsoleWriter(console)))
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.0.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for Uart {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.0.read(offset as u8);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            let _ = self.0.write(offset as u8, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_lines_cut() {
        let hub = Arc::new(EventHub::default());
        let rx = hub.subscribe(1024);
        let console = Console::new(3, hub);
        console.write(b"hello\r\nwor");
        console.write(b"ld\n");
        console.write(&vec![b'x'; MAX_LINE + 5]);
        let lines: Vec<String> = rx
            .try_iter()
            .filter_map(|e| match e {
                SystemEvent::ConsoleLine { partition: 3, line } => Some(line),
                _ => None,
            })
            .collect();
        assert_eq!(lines[..2], ["hello", "world"]);
        assert_eq!(lines[2].len(), MAX_LINE);
        assert!(console.history().starts_with(b"hello\r\n"));
    }

    #[test]
    fn a_partial_last_line_is_published_when_finished() {
        let hub = Arc::new(EventHub::default());
        let rx = hub.subscribe(1024);
        let console = Console::new(0, hub);
        console.write(b"done\nlast words");
        console.finish_line();
        console.finish_line();
        let lines: Vec<SystemEvent> = rx
            .try_iter()
            .filter(|e| matches!(e, SystemEvent::ConsoleLine { .. }))
            .collect();
        let line = |text: &str| SystemEvent::ConsoleLine {
            partition: 0,
            line: text.into(),
        };
        assert_eq!(lines, [line("done"), line("last words")]);
    }
}
