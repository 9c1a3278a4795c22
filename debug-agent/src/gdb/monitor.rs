//! `monitor` commands of the gdb stub: partitions and their states, reset, IRQ injection, help.

use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};

use super::handle::GuestHandle;
use super::target::PartitionTarget;

const HELP: &str = "hvdk monitor commands:
  monitor partitions            every partition with its state and vCPU states
  monitor state                 this partition's state and its vCPUs' states
  monitor reset                 reload this partition's image and restart it (stopped at
                                its entry point; then `maintenance flush register-cache`
                                makes gdb read its new registers)
  monitor irq VECTOR [VCPU]     raise interrupt VECTOR (32..255) on a vCPU (default 0)
  monitor help                  this text";

impl<H: GuestHandle> MonitorCmd for PartitionTarget<H> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["partitions"] => {
                for line in self.partitions_report() {
                    outputln!(out, "{line}");
                }
            }
            ["state"] => {
                // The partition's state, and its vCPUs' (stopped by this debugger, say).
                let vcpus: Vec<String> = (0..self.partition.vcpu_count())
                    .map(|i| format!("{i}:{}", self.partition.vcpu_state(i).name()))
                    .collect();
                outputln!(
                    out,
                    "{}: {}, vcpus {}",
                    self.partition.name(),
                    self.partition.state(),
                    vcpus.join(" ")
                )
            }
            ["reset"] => match self.partition.reset() {
                Ok(()) => {
                    // The reset released every vCPU; gdb still believes it is stopped, so stop
                    // them again at the entry point.
                    self.stop_all();
                    // gdb keeps the registers it read before and the remote protocol cannot
                    // tell it otherwise: its cache flush (gdb 13 deprecates `flushregs`) makes
                    // it read the new ones.
                    outputln!(
                        out,
                        "{} reset; stopped at its entry point (`maintenance flush register-cache` shows its registers)",
                        self.partition.name()
                    );
                }
                Err(e) => outputln!(out, "reset failed: {e}"),
            },
            ["irq", vector, rest @ ..] if rest.len() <= 1 => {
                let vector = parse_number(vector).and_then(|v| u8::try_from(v).ok());
                let vcpu = rest
                    .first()
                    .map_or(Some(0), |v| parse_number(v))
                    .and_then(|v| u32::try_from(v).ok());
                match (vector, vcpu) {
                    (Some(v), Some(i)) if v >= 32 => match self.partition.raise(i, v) {
                        Ok(()) => {
                            outputln!(
                                out,
                                "raised vector {v} on vCPU {i} of {}",
                                self.partition.name()
                            );
                        }
                        Err(e) => outputln!(out, "{e}"),
                    },
                    _ => outputln!(out, "usage: monitor irq VECTOR [VCPU] (VECTOR 32..255)"),
                }
            }
            [] | ["help"] => outputln!(out, "{HELP}"),
            _ => {
                outputln!(out, "unknown command {:?}", cmd.trim());
                outputln!(out, "{HELP}");
            }
        }
        Ok(())
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_in_decimal_and_hex() {
        assert_eq!(super::parse_number("48"), Some(48));
        assert_eq!(super::parse_number("0x30"), Some(48));
        assert_eq!(super::parse_number("x"), None);
    }
}
