//! hv-link (placeholder; being written).
