//! The virtual timer of a partition: one host thread that sleeps until the next deadline and
//! raises the programmed vector on the vCPU that programmed it. Periodic deadlines are absolute
//! (no drift); ticks missed because the host was late are coalesced and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hypercall::MIN_TIMER_PERIOD_NS;
use crate::irq::IrqLine;

#[derive(Debug, Default)]
struct TimerState {
    armed: Option<Armed>,
    shutdown: bool,
}

#[derive(Debug)]
struct Armed {
    line: IrqLine,
    deadline: Instant,
    period: Option<Duration>,
}

/// Counters of one timer.
#[derive(Debug, Default)]
pub struct TimerStats {
    /// Deadlines that raised an interrupt.
    pub fired: AtomicU64,
    /// Periodic deadlines skipped because the thread woke too late.
    pub missed: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<TimerState>,
    changed: Condvar,
    stats: TimerStats,
}

/// A partition's virtual timer.
#[derive(Debug)]
pub struct VirtualTimer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl VirtualTimer {
    /// Starts the timer thread (idle until programmed).
    pub fn start(name: &str) -> std::io::Result<VirtualTimer> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}-timer"))
                .spawn(move || run(&shared))?
        };
        Ok(VirtualTimer {
            shared,
            thread: Some(thread),
        })
    }

    /// Programs the timer: `period_ns` 0 cancels; otherwise the first deadline is one period from
    /// now and, when `periodic`, every period after it.
    pub fn set(&self, line: IrqLine, period_ns: u64, periodic: bool) {
        let mut state = self.lock();
        state.armed = (period_ns != 0).then(|| {
            let period = Duration::from_nanos(period_ns.max(MIN_TIMER_PERIOD_NS));
            Armed {
                line,
                deadline: Instant::now() + period,
                period: periodic.then_some(period),
            }
        });
        self.shared.changed.notify_all();
    }

    /// Cancels any programmed deadline.
    pub fn cancel(&self) {
        self.lock().armed = None;
        self.shared.changed.notify_all();
    }

    /// Counters.
    pub fn stats(&self) -> &TimerStats {
        &self.shared.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for VirtualTimer {
    fn drop(&mut self) {
        self.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if state.shutdown {
            return;
        }
        let Some(armed) = state.armed.as_mut() else {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < armed.deadline {
            let wait = armed.deadline - now;
            state = shared
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        armed.line.raise();
        shared.stats.fired.fetch_add(1, Ordering::Relaxed);
        match armed.period {
            Some(period) => {
                armed.deadline += period;
                if armed.deadline < now {
                    let behind = (now - armed.deadline).as_nanos() / period.as_nanos() + 1;
                    shared
                        .stats
                        .missed
                        .fetch_add(behind as u64, Ordering::Relaxed);
                    armed.deadline += period * behind as u32;
                }
            }
            None => state.armed = None,
        }
    }
}
