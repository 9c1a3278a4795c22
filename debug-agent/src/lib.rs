//! debug-agent (placeholder; being written).
