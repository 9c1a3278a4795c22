//! The console's state machine: what is shown and selected, and what each key, mouse click and
//! collector update does. No terminal here: the UI loop feeds events in and sends the returned
//! [`Command`]s to the collector, so every behaviour is unit-testable.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use hv_link::{PartitionState, VcpuState};
use ratatui::layout::{Position, Rect};

use crate::activity::TraceAnalyzer;
use crate::collector::{Command, Update};
use crate::model::Snapshot;

/// Samples kept per vCPU timeline (60 s at 10 Hz).
pub const TIMELINE_LEN: usize = 600;
/// Rate samples kept per interrupt vector.
pub const IRQ_HISTORY_LEN: usize = 120;
/// Lines kept per console.
pub const CONSOLE_LINES: usize = 2000;
/// Entries kept in the event log.
pub const EVENT_LOG_LEN: usize = 500;

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pane {
    /// The partitions table.
    Partitions,
    /// CPU timeline of the selected partition.
    Timeline,
    /// Interrupt rates.
    Interrupts,
    /// The selected partition's console (typed keys go to the guest once typing started).
    Console,
    /// The event log.
    Events,
}

impl Pane {
    /// All panes in Tab order.
    pub const ALL: [Pane; 5] = [
        Pane::Partitions,
        Pane::Timeline,
        Pane::Interrupts,
        Pane::Console,
        Pane::Events,
    ];

    fn step(self, forward: bool) -> Pane {
        let i = Pane::ALL.iter().position(|p| *p == self).unwrap_or(0);
        let n = Pane::ALL.len();
        Pane::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }
}

/// What one timeline cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuActivity {
    /// Running in the guest.
    Running,
    /// In the hypervisor (exit handling).
    InHypervisor,
    /// Halted, waiting for an interrupt.
    Halted,
    /// Blocked (e.g. on a device model).
    Blocked,
    /// Outside its schedule window.
    OutOfWindow,
    /// Paused by a control request.
    Paused,
    /// Stopped by a debugger.
    Debugger,
    /// Not running at all (created, crashed, exited) or no data.
    Stopped,
}

impl CpuActivity {
    /// The activity for a sampled vCPU state.
    pub fn from_vcpu(state: VcpuState) -> CpuActivity {
        match state {
            VcpuState::Running => CpuActivity::Running,
            VcpuState::Halted => CpuActivity::Halted,
            VcpuState::Paused => CpuActivity::Paused,
            VcpuState::StoppedInDebugger => CpuActivity::Debugger,
            VcpuState::OutOfWindow => CpuActivity::OutOfWindow,
            VcpuState::BlockedOnDevice => CpuActivity::Blocked,
            VcpuState::Created | VcpuState::Stopped => CpuActivity::Stopped,
        }
    }

    /// One-character symbol (the legend is in the help overlay).
    pub fn symbol(self) -> char {
        match self {
            CpuActivity::Running => '█',
            CpuActivity::InHypervisor => '▓',
            CpuActivity::Halted => '_',
            CpuActivity::Blocked => 'b',
            CpuActivity::OutOfWindow => '·',
            CpuActivity::Paused => 'P',
            CpuActivity::Debugger => 'D',
            CpuActivity::Stopped => ' ',
        }
    }
}

/// A modal state on top of the panes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modal {
    /// The help overlay.
    Help,
    /// "Reset `<partition>`? y/n".
    ConfirmReset(String),
    /// Typing a vector for IRQ injection into a partition.
    IrqPrompt {
        /// Target partition.
        partition: String,
        /// What was typed so far.
        input: String,
    },
}

/// What the UI loop must do after an input event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this to the collector.
    Send(Command),
    /// Leave the console.
    Quit,
}

/// The link as the UI sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Not connected yet.
    Connecting,
    /// Connected to `addr`.
    Up {
        /// Link address.
        addr: String,
    },
    /// Lost or refused; the collector retries.
    Down {
        /// Why.
        reason: String,
    },
}

/// One event log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Milliseconds since the console started (as given by the caller).
    pub at_ms: u64,
    /// The text.
    pub text: String,
    /// True for crashes, failures and lost links.
    pub alert: bool,
}

/// Scrollback of one partition's console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleBuffer {
    /// Complete lines.
    pub lines: VecDeque<String>,
    /// The line being printed (no newline yet).
    pub partial: String,
}

impl ConsoleBuffer {
    /// Appends raw UART output.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for ch in String::from_utf8_lossy(bytes).chars() {
            match ch {
                '\n' => {
                    let line = std::mem::take(&mut self.partial);
                    self.lines.push_back(line);
                    if self.lines.len() > CONSOLE_LINES {
                        self.lines.pop_front();
                    }
                }
                '\r' => {}
                '\t' => self.partial.push_str("    "),
                c if c.is_control() => {}
                c => self.partial.push(c),
            }
        }
    }

    /// Every line including the partial one (if any).
    pub fn all_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .map(String::as_str)
            .chain((!self.partial.is_empty()).then_some(self.partial.as_str()))
    }
}

/// Where the panes were drawn last (for mouse hits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HitAreas {
    /// Pane rectangles.
    pub panes: Vec<(Pane, Rect)>,
    /// First table row (below border and header) of the partitions table.
    pub table_rows: Option<Rect>,
}

/// The console's whole state.
#[derive(Debug, Clone)]
pub struct App {
    /// Latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// Link status.
    pub link: LinkStatus,
    /// System name (from the handshake).
    pub system: String,
    /// Selected partition (index into the snapshot's rows).
    pub selected: usize,
    /// Focused pane.
    pub focus: Pane,
    /// Keys go to the watched guest's UART (`c`, or Enter in the console pane; Esc ends it).
    /// Focusing the console pane alone does not start typing.
    pub typing: bool,
    /// Open modal, if any.
    pub modal: Option<Modal>,
    /// A one-line status message (last command's outcome).
    pub status: Option<(String, bool)>,
    /// CPU timelines by partition name, one deque per vCPU, newest last.
    pub timelines: BTreeMap<String, Vec<VecDeque<CpuActivity>>>,
    /// Interrupt rate history by (partition, vector), newest last.
    pub irq_history: BTreeMap<(String, u8), VecDeque<f64>>,
    /// Console scrollback by partition name.
    pub consoles: BTreeMap<String, ConsoleBuffer>,
    /// Lines scrolled back from the end in the console pane.
    pub console_scroll: usize,
    /// Event log, newest last.
    pub events: VecDeque<LogEntry>,
    /// Lines scrolled back from the end in the event log.
    pub events_scroll: usize,
    /// Partition whose console the collector follows.
    pub watched: Option<String>,
    /// Mouse hit areas of the last frame.
    pub hits: HitAreas,
    /// Activity and interrupt latency from trace events, when the agent streams them.
    pub trace: TraceAnalyzer,
    /// Following the trace: `Some(Some(file))` when recording to a file, `Some(None)` live only.
    pub recording: Option<Option<PathBuf>>,
    /// Follow the trace live whenever connected (on by default; `L` toggles it).
    pub follow_trace: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// A fresh state, before any data.
    pub fn new() -> App {
        App {
            snapshot: None,
            link: LinkStatus::Connecting,
            system: String::new(),
            selected: 0,
            focus: Pane::Partitions,
            typing: false,
            modal: None,
            status: None,
            timelines: BTreeMap::new(),
            irq_history: BTreeMap::new(),
            consoles: BTreeMap::new(),
            console_scroll: 0,
            events: VecDeque::new(),
            events_scroll: 0,
            watched: None,
            hits: HitAreas::default(),
            trace: TraceAnalyzer::default(),
            recording: None,
            follow_trace: true,
        }
    }

    /// Name of the selected partition.
    pub fn selected_name(&self) -> Option<&str> {
        self.snapshot
            .as_ref()?
            .partitions
            .get(self.selected)
            .map(|p| p.name.as_str())
    }

    /// Appends to the event log.
    pub fn log(&mut self, at_ms: u64, text: impl Into<String>, alert: bool) {
        self.events.push_back(LogEntry {
            at_ms,
            text: text.into(),
            alert,
        });
        if self.events.len() > EVENT_LOG_LEN {
            self.events.pop_front();
        }
    }

    /// The console command the collector needs so that it follows the selected partition.
    fn watch_selected(&mut self) -> Option<Action> {
        let name = self.selected_name()?.to_owned();
        if self.watched.as_deref() == Some(name.as_str()) {
            return None;
        }
        self.watched = Some(name.clone());
        self.console_scroll = 0;
        Some(Action::Send(Command::WatchConsole(name)))
    }

    /// Applies a collector update; `at_ms` stamps log entries. Returns a command to send when
    /// the update makes one necessary (following the first partition's console).
    pub fn apply(&mut self, update: Update, at_ms: u64) -> Option<Action> {
        match update {
            Update::Connected { system, addr } => {
                if matches!(self.link, LinkStatus::Down { .. }) {
                    self.log(at_ms, format!("link up again: {addr}"), false);
                } else {
                    self.log(at_ms, format!("connected to {system} on {addr}"), false);
                }
                self.system = system;
                self.link = LinkStatus::Up { addr };
                // The collector re-opens the watched console itself; the trace is followed live
                // (timelines and IRQ latency come from its records) unless the user switched it off.
                if self.follow_trace && self.recording.is_none() {
                    self.recording = Some(None);
                    return Some(Action::Send(Command::StartTrace(None)));
                }
                None
            }
            Update::LinkDown { reason } => {
                if !matches!(&self.link, LinkStatus::Down { reason: r } if *r == reason) {
                    self.log(at_ms, format!("link down: {reason}"), true);
                }
                self.link = LinkStatus::Down { reason };
                // The trace channel went with the link (the file keeps what arrived).
                // Live following starts again with the link.
                if let Some(rec) = self.recording.take() {
                    if let Some(file) = rec {
                        let file = file.display();
                        self.log(at_ms, format!("trace ended with the link: {file}"), true);
                    }
                    self.trace = TraceAnalyzer::default();
                }
                None
            }
            Update::Trace(events) => {
                self.trace.feed(&events);
                None
            }
            Update::Snapshot(mut s) => {
                fill_latency(&mut s, &self.trace);
                if let Some(old) = self.selected_name().map(str::to_owned)
                    && let Some(i) = s.partitions.iter().position(|p| p.name == old)
                {
                    self.selected = i;
                }
                self.selected = self.selected.min(s.partitions.len().saturating_sub(1));
                for irq in s.interrupts.iter().filter(|_| s.fresh_counters) {
                    if let Some(rate) = irq.per_s {
                        let h = self
                            .irq_history
                            .entry((irq.partition.clone(), irq.vector))
                            .or_default();
                        h.push_back(rate);
                        if h.len() > IRQ_HISTORY_LEN {
                            h.pop_front();
                        }
                    }
                }
                self.snapshot = Some(s);
                self.watch_selected()
            }
            Update::StateChanged(p) => {
                let alert = matches!(
                    p.state,
                    PartitionState::Crashed { .. } | PartitionState::StoppedInDebugger
                );
                let state = match &p.state {
                    PartitionState::StoppedInDebugger => "stopped in debugger".to_owned(),
                    other => other.to_string(),
                };
                let mut text = format!("{}: {state}", p.partition);
                if let Some(d) = &p.detail {
                    text.push_str(&format!(" ({d})"));
                }
                self.log(at_ms, text, alert);
                None
            }
            Update::Console { partition, bytes } => {
                self.consoles
                    .entry(partition)
                    .or_default()
                    .push_bytes(&bytes);
                None
            }
            Update::CommandDone { what, error } => {
                if error.is_some() && ["record", "live trace"].iter().any(|p| what.starts_with(p)) {
                    self.recording = None;
                }
                if error.is_none()
                    && (what.contains("trace saved") || what.contains("trace stopped"))
                {
                    self.log(at_ms, what.clone(), false);
                    self.status = Some((what, false));
                    return None;
                }
                match error {
                    // The title's ● LIVE TRACE says it already.
                    None if what == "live trace" => {
                        self.log(at_ms, "following the trace live", false);
                    }
                    None => {
                        self.status = Some((format!("{what}: done"), false));
                        self.log(at_ms, format!("{what}: done"), false);
                    }
                    Some(e) => {
                        self.status = Some((format!("{what} failed: {e}"), true));
                        self.log(at_ms, format!("{what} failed: {e}"), true);
                    }
                }
                None
            }
        }
    }

    /// Samples every vCPU's state into the timelines (called on each UI tick).
    pub fn sample_timelines(&mut self) {
        let Some(s) = &self.snapshot else { return };
        let link_up = matches!(self.link, LinkStatus::Up { .. });
        for p in &s.partitions {
            let lanes = self.timelines.entry(p.name.clone()).or_default();
            if lanes.len() < p.vcpus.len() {
                lanes.resize_with(p.vcpus.len(), VecDeque::new);
            }
            for (lane, v) in lanes.iter_mut().zip(&p.vcpus) {
                let traced = u16::try_from(v.index)
                    .ok()
                    .and_then(|i| self.trace.take_activity(p.id, i));
                let a = match traced {
                    _ if !link_up => CpuActivity::Stopped,
                    Some(a) => a,
                    None => CpuActivity::from_vcpu(v.state),
                };
                lane.push_back(a);
                if lane.len() > TIMELINE_LEN {
                    lane.pop_front();
                }
            }
        }
    }

    fn partitions_len(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.partitions.len())
    }

    fn select(&mut self, i: usize) -> Option<Action> {
        let n = self.partitions_len();
        if n == 0 {
            return None;
        }
        self.selected = i.min(n - 1);
        self.watch_selected()
    }

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        if let Some(modal) = self.modal.take() {
            return self.on_modal_key(modal, key);
        }
        if self.typing {
            return self.on_typed_key(key);
        }
        // A key press is the user's next step: the last command's outcome gives the footer back
        // to the key hints.
        self.status = None;
        let selected = self.selected_name().map(str::to_owned);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
            KeyCode::Char('?') => {
                self.modal = Some(Modal::Help);
                None
            }
            KeyCode::Tab => {
                self.focus = self.focus.step(true);
                None
            }
            KeyCode::BackTab => {
                self.focus = self.focus.step(false);
                None
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll(true),
            KeyCode::Down | KeyCode::Char('j') => self.scroll(false),
            KeyCode::PageUp => {
                self.page(true);
                None
            }
            KeyCode::PageDown => {
                self.page(false);
                None
            }
            KeyCode::Left | KeyCode::Char('h') => {
                self.focus = self.focus.step(false);
                None
            }
            KeyCode::Right | KeyCode::Char('l') => {
                self.focus = self.focus.step(true);
                None
            }
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => self.select(usize::MAX),
            KeyCode::Char('p') => selected.map(|p| Action::Send(Command::Pause(p))),
            KeyCode::Char('r') => selected.map(|p| Action::Send(Command::Resume(p))),
            KeyCode::Char('R') => {
                self.modal = selected.map(Modal::ConfirmReset);
                None
            }
            KeyCode::Char('i') => {
                self.modal = selected.map(|partition| Modal::IrqPrompt {
                    partition,
                    input: String::new(),
                });
                None
            }
            KeyCode::Char('L') => match self.recording.take() {
                Some(_) => {
                    self.follow_trace = false;
                    self.trace = TraceAnalyzer::default();
                    Some(Action::Send(Command::StopTrace))
                }
                None => {
                    self.follow_trace = true;
                    self.recording = Some(None);
                    Some(Action::Send(Command::StartTrace(None)))
                }
            },
            KeyCode::Char('t') => match self.recording.take() {
                // Saving a recording goes back to following the trace live (if it was).
                Some(Some(_)) if self.follow_trace => {
                    self.recording = Some(None);
                    Some(Action::Send(Command::StartTrace(None)))
                }
                Some(Some(_)) => {
                    self.trace = TraceAnalyzer::default();
                    Some(Action::Send(Command::StopTrace))
                }
                Some(None) | None => {
                    let path = PathBuf::from(format!(
                        "hv-trace-{}-{}.hvt",
                        if self.system.is_empty() {
                            "system"
                        } else {
                            &self.system
                        },
                        utc_stamp(std::time::SystemTime::now())
                    ));
                    let path = unique_path(path);
                    self.recording = Some(Some(path.clone()));
                    Some(Action::Send(Command::StartTrace(Some(path))))
                }
            },
            KeyCode::Char('c') => {
                self.focus = Pane::Console;
                self.typing = true;
                None
            }
            KeyCode::Enter if self.focus == Pane::Console => {
                self.typing = true;
                None
            }
            _ => None,
        }
    }

    /// PageUp / PageDown: ten lines in the console pane or the event log.
    fn page(&mut self, up: bool) {
        let scroll = match self.focus {
            Pane::Events => &mut self.events_scroll,
            _ => &mut self.console_scroll,
        };
        *scroll = if up {
            *scroll + 10
        } else {
            scroll.saturating_sub(10)
        };
        if self.focus == Pane::Events {
            self.events_scroll = self.events_scroll.min(self.events.len().saturating_sub(1));
        }
    }

    fn scroll(&mut self, up: bool) -> Option<Action> {
        match self.focus {
            Pane::Console => {
                self.console_scroll = if up {
                    self.console_scroll + 1
                } else {
                    self.console_scroll.saturating_sub(1)
                };
                None
            }
            Pane::Events => {
                self.events_scroll = if up {
                    (self.events_scroll + 1).min(self.events.len().saturating_sub(1))
                } else {
                    self.events_scroll.saturating_sub(1)
                };
                None
            }
            _ => {
                let i = if up {
                    self.selected.saturating_sub(1)
                } else {
                    self.selected + 1
                };
                self.select(i)
            }
        }
    }

    fn on_modal_key(&mut self, modal: Modal, key: KeyEvent) -> Option<Action> {
        match modal {
            Modal::Help => None, // any key closes it
            Modal::ConfirmReset(p) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(Action::Send(Command::Reset(p))),
                _ => {
                    self.status = Some((format!("reset {p}: cancelled"), false));
                    None
                }
            },
            Modal::IrqPrompt {
                partition,
                mut input,
            } => match key.code {
                KeyCode::Esc => None,
                KeyCode::Backspace => {
                    input.pop();
                    self.modal = Some(Modal::IrqPrompt { partition, input });
                    None
                }
                KeyCode::Char(c) if (c.is_ascii_hexdigit() || c == 'x') && input.len() < 5 => {
                    input.push(c);
                    self.modal = Some(Modal::IrqPrompt { partition, input });
                    None
                }
                KeyCode::Enter => match parse_vector(&input) {
                    Some(vector) => Some(Action::Send(Command::InjectIrq {
                        partition,
                        vcpu: 0,
                        vector,
                    })),
                    None => {
                        self.status = Some((
                            format!("not a vector: {input:?} (32..=255, decimal or 0x hex)"),
                            true,
                        ));
                        self.modal = Some(Modal::IrqPrompt { partition, input });
                        None
                    }
                },
                _ => {
                    self.modal = Some(Modal::IrqPrompt { partition, input });
                    None
                }
            },
        }
    }

    /// A key while typing into the guest: Esc stops typing (the console pane keeps the focus),
    /// Tab and Shift-Tab stop it and move on, PageUp/PageDown scroll; the rest goes to the UART.
    fn on_typed_key(&mut self, key: KeyEvent) -> Option<Action> {
        let bytes: Vec<u8> = match key.code {
            KeyCode::Esc => {
                self.typing = false;
                return None;
            }
            KeyCode::Tab => {
                self.typing = false;
                self.focus = self.focus.step(true);
                return None;
            }
            KeyCode::BackTab => {
                self.typing = false;
                self.focus = self.focus.step(false);
                return None;
            }
            KeyCode::PageUp => {
                self.console_scroll += 10;
                return None;
            }
            KeyCode::PageDown => {
                self.console_scroll = self.console_scroll.saturating_sub(10);
                return None;
            }
            KeyCode::Enter => vec![b'\r'],
            KeyCode::Backspace => vec![0x7f],
            KeyCode::Char(c)
                if key.modifiers.contains(KeyModifiers::CONTROL) && c.is_ascii_alphabetic() =>
            {
                vec![(c.to_ascii_lowercase() as u8) & 0x1f]
            }
            KeyCode::Char(_) if key.modifiers.contains(KeyModifiers::CONTROL) => return None,
            KeyCode::Char(c) => c.to_string().into_bytes(),
            _ => return None,
        };
        self.watched
            .as_ref()
            .map(|_| Action::Send(Command::ConsoleInput(bytes)))
    }

    /// Handles a mouse event: a left click focuses the pane under it and selects a table row;
    /// the wheel scrolls.
    pub fn on_mouse(&mut self, m: MouseEvent) -> Option<Action> {
        let pos = Position::new(m.column, m.row);
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                self.modal = None;
                if let Some((pane, _)) = self.hits.panes.iter().find(|(_, r)| r.contains(pos)) {
                    // A click focuses; typing starts only with `c` or Enter.
                    if *pane != Pane::Console {
                        self.typing = false;
                    }
                    self.focus = *pane;
                }
                if let Some(rows) = self.hits.table_rows
                    && rows.contains(pos)
                {
                    return self.select(usize::from(m.row - rows.y));
                }
                None
            }
            MouseEventKind::ScrollUp => self.scroll(true),
            MouseEventKind::ScrollDown => self.scroll(false),
            _ => None,
        }
    }
}

/// `path`, or `path` with a number before its extension when it exists already.
/// Fills in interrupt latency from the trace, where there is some.
pub(crate) fn fill_latency(s: &mut Snapshot, trace: &TraceAnalyzer) {
    for irq in &mut s.interrupts {
        if irq.latency.is_none()
            && let Some(id) = s
                .partitions
                .iter()
                .find(|p| p.name == irq.partition)
                .map(|p| p.id)
        {
            irq.latency = trace.raise_latency(id, irq.vector);
            irq.eoi_latency = trace.eoi_latency(id, irq.vector);
        }
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for trace file names.
fn utc_stamp(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn unique_path(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (1..)
        .map(|i| path.with_file_name(format!("{stem}.{i}.hvt")))
        .find(|p| !p.exists())
        .unwrap_or(path)
}

/// A vector typed in the prompt: decimal or `0x` hex, 32..=255.
pub fn parse_vector(text: &str) -> Option<u8> {
    let v = match text.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => text.parse::<u8>().ok()?,
    };
    (v >= 32).then_some(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::tests::info;
    use crate::model::{RawSample, SnapshotBuilder};
    use hv_link::control::StateChangedParams;
    use std::time::Instant;

    pub(crate) fn demo_snapshot() -> Snapshot {
        let mut b = SnapshotBuilder::new("demo");
        b.build(RawSample {
            partitions: vec![
                info(0, "control", PartitionState::Running, &[VcpuState::Running]),
                info(
                    1,
                    "telemetry",
                    PartitionState::Running,
                    &[VcpuState::Halted],
                ),
                info(
                    2,
                    "worker",
                    PartitionState::Paused,
                    &[VcpuState::Paused, VcpuState::Paused],
                ),
            ],
            stats: None,
            taken_at: Instant::now(),
        })
    }

    pub(crate) fn demo_app() -> App {
        let mut app = App::new();
        app.apply(
            Update::Connected {
                system: "demo".into(),
                addr: "unix:/run/demo.sock".into(),
            },
            0,
        );
        app.apply(Update::Snapshot(demo_snapshot()), 0);
        app
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    #[test]
    fn first_snapshot_watches_the_first_console() {
        let mut app = App::new();
        let a = app.apply(Update::Snapshot(demo_snapshot()), 0);
        assert_eq!(
            a,
            Some(Action::Send(Command::WatchConsole("control".into())))
        );
        assert_eq!(app.apply(Update::Snapshot(demo_snapshot()), 0), None);
    }

    #[test]
    fn selection_and_actions() {
        let mut app = demo_app();
        assert_eq!(app.selected_name(), Some("control"));
        assert_eq!(
            app.on_key(ch('p')),
            Some(Action::Send(Command::Pause("control".into())))
        );
        assert_eq!(
            app.on_key(ch('j')),
            Some(Action::Send(Command::WatchConsole("telemetry".into())))
        );
        assert_eq!(
            app.on_key(key(KeyCode::Down)),
            Some(Action::Send(Command::WatchConsole("worker".into())))
        );
        // At the end: stays.
        assert_eq!(app.on_key(key(KeyCode::Down)), None);
        assert_eq!(app.selected_name(), Some("worker"));
        assert_eq!(
            app.on_key(ch('r')),
            Some(Action::Send(Command::Resume("worker".into())))
        );
        app.on_key(ch('k'));
        assert_eq!(app.selected_name(), Some("telemetry"));
        // Selection follows the name when the order changes.
        let mut s = demo_snapshot();
        s.partitions.reverse();
        app.apply(Update::Snapshot(s), 0);
        assert_eq!(app.selected_name(), Some("telemetry"));
        assert_eq!(app.selected, 1);
    }

    #[test]
    fn reset_needs_confirmation() {
        let mut app = demo_app();
        assert_eq!(app.on_key(ch('R')), None);
        assert_eq!(app.modal, Some(Modal::ConfirmReset("control".into())));
        assert_eq!(app.on_key(ch('n')), None);
        assert_eq!(app.modal, None);
        app.on_key(ch('R'));
        assert_eq!(
            app.on_key(ch('y')),
            Some(Action::Send(Command::Reset("control".into())))
        );
        assert_eq!(app.modal, None);
    }

    #[test]
    fn irq_prompt_parses_vectors() {
        let mut app = demo_app();
        app.on_key(ch('i'));
        for c in "0x3z0".chars() {
            app.on_key(ch(c));
        }
        assert_eq!(
            app.modal,
            Some(Modal::IrqPrompt {
                partition: "control".into(),
                input: "0x30".into()
            })
        );
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Some(Action::Send(Command::InjectIrq {
                partition: "control".into(),
                vcpu: 0,
                vector: 48
            }))
        );
        // Out of range: stays open with a message; Esc cancels.
        app.on_key(ch('i'));
        app.on_key(ch('7'));
        assert_eq!(app.on_key(key(KeyCode::Enter)), None);
        assert!(app.status.as_ref().unwrap().1);
        assert!(app.modal.is_some());
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.on_key(key(KeyCode::Esc)), None);
        assert_eq!(app.modal, None);
        assert_eq!(parse_vector("255"), Some(255));
        assert_eq!(parse_vector("31"), None);
        assert_eq!(parse_vector("256"), None);
    }

    #[test]
    fn t_toggles_recording() {
        // Connecting follows the trace live.
        let mut app = App::new();
        let connected = Update::Connected {
            system: "demo".into(),
            addr: "unix:/run/demo.sock".into(),
        };
        assert_eq!(
            app.apply(connected.clone(), 0),
            Some(Action::Send(Command::StartTrace(None)))
        );
        assert_eq!(app.recording, Some(None));
        let Some(Action::Send(Command::StartTrace(Some(path)))) = app.on_key(ch('t')) else {
            panic!("t should start recording");
        };
        assert!(path.to_string_lossy().starts_with("hv-trace-demo-"));
        assert_eq!(app.recording, Some(Some(path)));
        // t again saves the file and goes back to following live.
        assert_eq!(
            app.on_key(ch('t')),
            Some(Action::Send(Command::StartTrace(None)))
        );
        assert_eq!(app.recording, Some(None));
        // L stops following, also after a reconnection; L again follows.
        assert_eq!(app.on_key(ch('L')), Some(Action::Send(Command::StopTrace)));
        assert_eq!(app.recording, None);
        app.apply(
            Update::LinkDown {
                reason: "gone".into(),
            },
            1,
        );
        assert_eq!(app.apply(connected, 2), None);
        let Some(Action::Send(Command::StartTrace(Some(_)))) = app.on_key(ch('t')) else {
            panic!("t should start recording");
        };
        assert_eq!(app.on_key(ch('t')), Some(Action::Send(Command::StopTrace)));
        assert_eq!(app.recording, None);
        assert_eq!(
            app.on_key(ch('L')),
            Some(Action::Send(Command::StartTrace(None)))
        );
        assert_eq!(app.recording, Some(None));
        assert_eq!(app.on_key(ch('L')), Some(Action::Send(Command::StopTrace)));
        assert_eq!(app.recording, None);
        // A failed start clears the indicator.
        app.on_key(ch('t'));
        app.apply(
            Update::CommandDone {
                what: "record trace to x".into(),
                error: Some("not supported".into()),
            },
            0,
        );
        assert_eq!(app.recording, None);
    }

    #[test]
    fn help_quit_and_panes() {
        let mut app = demo_app();
        app.on_key(ch('?'));
        assert_eq!(app.modal, Some(Modal::Help));
        // Any key closes help without acting.
        assert_eq!(app.on_key(ch('q')), None);
        assert_eq!(app.modal, None);
        assert_eq!(app.on_key(ch('q')), Some(Action::Quit));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Some(Action::Quit));
        let mut seen = vec![app.focus];
        for _ in 0..4 {
            app.on_key(key(KeyCode::Tab));
            seen.push(app.focus);
        }
        assert_eq!(seen, Pane::ALL.to_vec());
        // In the console, Tab still moves on; BackTab goes back.
        app.on_key(key(KeyCode::BackTab));
        assert_eq!(app.focus, Pane::Console);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.focus, Pane::Events);
        app.on_key(ch('h'));
        assert_eq!(app.focus, Pane::Console);
    }

    #[test]
    fn trace_files_are_named_after_the_system_and_the_time() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_292_915);
        assert_eq!(utc_stamp(at), "20261203-101515");
        assert_eq!(utc_stamp(std::time::UNIX_EPOCH), "19700101-000000");
        let mut app = demo_app();
        let Some(Action::Send(Command::StartTrace(Some(path)))) = app.on_key(ch('t')) else {
            panic!("t must start a recording");
        };
        let name = path.display().to_string();
        assert!(
            name.starts_with("hv-trace-demo-20") && name.ends_with(".hvt"),
            "{name}"
        );
        assert_eq!(
            name.len(),
            "hv-trace-demo-YYYYMMDD-HHMMSS.hvt".len(),
            "{name}"
        );
    }

    #[test]
    fn focusing_the_console_does_not_type_into_the_guest() {
        let mut app = demo_app();
        for _ in 0..3 {
            app.on_key(key(KeyCode::Tab));
        }
        assert_eq!((app.focus, app.typing), (Pane::Console, false));
        // j / k scroll the console, other keys keep their meaning; nothing reaches the guest.
        app.consoles
            .entry("control".into())
            .or_default()
            .push_bytes(b"a\nb\nc\n");
        assert_eq!(app.on_key(ch('k')), None);
        assert_eq!(app.on_key(ch('k')), None);
        assert_eq!(app.console_scroll, 2);
        assert_eq!(app.on_key(ch('j')), None);
        assert_eq!(app.console_scroll, 1);
        assert_eq!(
            app.on_key(ch('p')),
            Some(Action::Send(Command::Pause("control".into())))
        );
        // Enter starts typing here; Esc stops it and the pane keeps the focus.
        assert_eq!(app.on_key(key(KeyCode::Enter)), None);
        assert!(app.typing);
        assert_eq!(
            app.on_key(ch('j')),
            Some(Action::Send(Command::ConsoleInput(b"j".to_vec())))
        );
        assert_eq!(app.on_key(key(KeyCode::Esc)), None);
        assert_eq!((app.focus, app.typing), (Pane::Console, false));
        assert_eq!(app.on_key(ch('q')), Some(Action::Quit));
        // Tab while typing stops typing and moves on.
        app.on_key(ch('c'));
        app.on_key(key(KeyCode::Tab));
        assert_eq!((app.focus, app.typing), (Pane::Events, false));
        // Enter elsewhere does not start typing.
        app.on_key(key(KeyCode::Enter));
        assert!(!app.typing);
    }

    #[test]
    fn console_input_goes_to_the_guest() {
        let mut app = demo_app();
        app.on_key(ch('c'));
        assert_eq!(app.focus, Pane::Console);
        assert_eq!(
            app.on_key(ch('q')),
            Some(Action::Send(Command::ConsoleInput(b"q".to_vec())))
        );
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            Some(Action::Send(Command::ConsoleInput(b"\r".to_vec())))
        );
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL)),
            Some(Action::Send(Command::ConsoleInput(vec![4])))
        );
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(app.on_key(key(KeyCode::Esc)), None);
        assert_eq!((app.focus, app.typing), (Pane::Console, false));
    }

    #[test]
    fn updates_fill_log_console_and_timelines() {
        let mut app = demo_app();
        app.apply(
            Update::Console {
                partition: "control".into(),
                bytes: b"tick 1\r\ntick".to_vec(),
            },
            5,
        );
        app.apply(
            Update::Console {
                partition: "control".into(),
                bytes: b" 2\n".to_vec(),
            },
            5,
        );
        let lines: Vec<&str> = app.consoles["control"].all_lines().collect();
        assert_eq!(lines, ["tick 1", "tick 2"]);
        app.apply(
            Update::StateChanged(StateChangedParams {
                partition: "worker".into(),
                state: PartitionState::Crashed {
                    reason: "triple fault".into(),
                },
                detail: Some("vCPU 1".into()),
            }),
            1500,
        );
        let last = app.events.back().unwrap();
        assert_eq!(last.text, "worker: crashed (triple fault) (vCPU 1)");
        assert!(last.alert);
        app.apply(
            Update::LinkDown {
                reason: "gone".into(),
            },
            2000,
        );
        app.apply(
            Update::LinkDown {
                reason: "gone".into(),
            },
            2100,
        );
        assert_eq!(
            app.events
                .iter()
                .filter(|e| e.text.contains("gone"))
                .count(),
            1
        );
        app.sample_timelines();
        assert_eq!(app.timelines["worker"][0][0], CpuActivity::Stopped);
        app.recording = Some(Some("t.hvt".into()));
        app.apply(
            Update::LinkDown {
                reason: "gone again".into(),
            },
            2050,
        );
        assert_eq!(app.recording, None);
        assert!(app.events.back().unwrap().text.contains("trace ended"));
        app.apply(
            Update::Connected {
                system: "demo".into(),
                addr: "unix:/x".into(),
            },
            2200,
        );
        app.sample_timelines();
        assert_eq!(app.timelines["worker"][1][1], CpuActivity::Paused);
        assert_eq!(app.timelines["control"][0][1], CpuActivity::Running);
        assert!(app.events.back().unwrap().text.contains("link up again"));
    }

    #[test]
    fn trace_events_drive_timeline_and_latency() {
        use crate::activity::{TraceEvent, TraceEventKind};
        let mut app = demo_app();
        let ev = |ts_ns, kind| TraceEvent {
            ts_ns,
            partition: 1,
            vcpu: 0,
            kind,
        };
        app.apply(
            Update::Trace(vec![
                ev(0, TraceEventKind::ScheduleOut),
                ev(
                    500,
                    TraceEventKind::IrqRaise {
                        vector: 48,
                        raised_ns: 100,
                    },
                ),
                ev(600, TraceEventKind::ScheduleIn),
            ]),
            0,
        );
        app.sample_timelines();
        // telemetry (id 1) from the trace; control from its sampled state.
        assert_eq!(app.timelines["telemetry"][0][0], CpuActivity::OutOfWindow);
        assert_eq!(app.timelines["control"][0][0], CpuActivity::Running);
        let mut s = demo_snapshot();
        s.interrupts.push(crate::model::IrqRow {
            partition: "telemetry".into(),
            vector: 48,
            per_s: Some(1.0),
            total: 1,
            latency: None,
            eoi_latency: None,
        });
        app.apply(Update::Snapshot(s), 0);
        let irq = &app.snapshot.as_ref().unwrap().interrupts[0];
        assert_eq!(irq.latency.map(|l| l.max_ns), Some(400));
    }

    #[test]
    fn mouse_selects_rows_and_panes() {
        let mut app = demo_app();
        app.hits = HitAreas {
            panes: vec![
                (Pane::Partitions, Rect::new(0, 1, 80, 7)),
                (Pane::Console, Rect::new(0, 20, 40, 10)),
            ],
            table_rows: Some(Rect::new(1, 3, 78, 3)),
        };
        let click = |col, row| MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: col,
            row,
            modifiers: KeyModifiers::NONE,
        };
        assert_eq!(
            app.on_mouse(click(5, 5)),
            Some(Action::Send(Command::WatchConsole("worker".into())))
        );
        assert_eq!(app.on_mouse(click(5, 25)), None);
        assert_eq!(app.focus, Pane::Console);
    }
}
