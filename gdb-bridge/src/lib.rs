//! gdb-bridge (placeholder; being written).
