//! hvdk terminal console: partitions table, CPU and interrupt timelines, guest consoles, event
//! log and partition control over the host link (ratatui + crossterm), plus a batch mode that
//! prints snapshots as JSON or CSV lines (like `xentop -b`).
//!
//! Layers: [`model`] (samples → snapshots with rates), [`activity`] (trace events → CPU activity
//! and IRQ latency), [`collector`] (a thread that polls the link
//! and carries out commands), [`app`] (the state machine for keys, mouse and updates), [`ui`]
//! (drawing), [`batch`] (batch mode) and [`term`] (the interactive terminal loop).

pub mod activity;
pub mod app;
pub mod batch;
pub mod collector;
pub mod model;
pub mod term;
pub mod ui;

pub use app::{Action, App, Pane};
pub use collector::{Collector, CollectorOptions, Command, Update};
pub use model::{PartitionRow, RawSample, Snapshot, SnapshotBuilder, StatsSample};
