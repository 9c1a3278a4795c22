//! The interactive console: sets up the terminal, runs the event loop (collector updates, input
//! and a 10 Hz redraw tick in one `select!`), and restores the terminal on exit or panic.

use std::io::stdout;
use std::time::{Duration, Instant};

use crossbeam_channel::select;
use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind};
use crossterm::execute;

use crate::app::{Action, App};
use crate::collector::{Collector, CollectorOptions};
use crate::ui;

/// Redraw period (10 Hz).
pub const TICK: Duration = Duration::from_millis(100);

/// Interactive console failures.
#[derive(Debug, thiserror::Error)]
pub enum TermError {
    /// Terminal setup, drawing or input failed.
    #[error("terminal")]
    Io(#[from] std::io::Error),
}

/// Restores the terminal when dropped (also on early returns).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

/// Runs the console until the user quits. The link may be down at first or drop later: the
/// collector keeps retrying and the title bar says so.
pub fn run(opts: CollectorOptions) -> Result<(), TermError> {
    run_until(
        opts,
        &crossbeam_channel::never(),
        &crossbeam_channel::never(),
    )
}

/// Like [`run`], and also ends when `stop` receives a message or disconnects (for an embedding
/// program, e.g. `hv run`, whose system stopped); lines from `notes` (what the embedding program
/// would otherwise print, such as its gdb port table) go to the event log.
pub fn run_until(
    opts: CollectorOptions,
    stop: &crossbeam_channel::Receiver<()>,
    notes: &crossbeam_channel::Receiver<String>,
) -> Result<(), TermError> {
    let collector = Collector::start(opts)?;
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    execute!(stdout(), EnableMouseCapture)?;

    let (itx, irx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("hv-console-input".into())
        .spawn(move || {
            while let Ok(ev) = event::read() {
                if itx.send(ev).is_err() {
                    break;
                }
            }
        })?;

    let started = Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let ticker = crossbeam_channel::tick(TICK);
    let mut app = App::new();
    terminal.draw(|f| ui::draw(f, &mut app))?;
    loop {
        let action = select! {
            recv(stop) -> _ => Some(Action::Quit),
            recv(notes) -> note => {
                if let Ok(note) = note {
                    app.log(ms(), note, false);
                }
                None
            }
            recv(ticker) -> _ => {
                app.sample_timelines();
                terminal.draw(|f| ui::draw(f, &mut app))?;
                None
            }
            recv(collector.updates()) -> u => match u {
                Ok(u) => app.apply(u, ms()),
                Err(_) => Some(Action::Quit),
            },
            recv(irx) -> ev => match ev {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    let a = app.on_key(k);
                    terminal.draw(|f| ui::draw(f, &mut app))?;
                    a
                }
                Ok(Event::Mouse(m)) => app.on_mouse(m),
                Ok(Event::Resize(..)) => {
                    terminal.autoresize()?;
                    terminal.draw(|f| ui::draw(f, &mut app))?;
                    None
                }
                Ok(_) => None,
                Err(_) => Some(Action::Quit),
            },
        };
        match action {
            Some(Action::Quit) => break,
            Some(Action::Send(cmd)) => collector.send(cmd),
            None => {}
        }
    }
    drop(collector);
    Ok(())
}
