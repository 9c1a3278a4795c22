//! Adaptive polling before blocking, as KVM's halt-polling does: a thread that is about to sleep
//! until another thread wakes it spins for a while first, because waking a sleeping thread on
//! another CPU costs far more than the wait often is (40–150 µs on a nested host, where the
//! other CPU is itself an idle vCPU). The window grows while waits end just after it and shrinks
//! while they are much longer, so a thread that waits long (a 1 kHz timer tick) never spins and
//! one in a tight request/reply exchange (a device model and its client) rarely sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The first window once polling pays off.
pub const START: Duration = Duration::from_micros(10);
/// The longest window: a wait longer than this is not worth spinning for.
pub const MAX: Duration = Duration::from_micros(200);

/// One waiter's (or one kind of wait's) current poll window; shared waiters may race on it,
/// which only blurs the adaptation.
#[derive(Debug, Default)]
pub struct PollWindow {
    ns: AtomicU64,
}

impl PollWindow {
    /// The current window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.ns.load(Ordering::Relaxed))
    }

    /// Spins until `done` or the window ends; whether `done` was seen.
    pub fn spin_until(&self, mut done: impl FnMut() -> bool) -> bool {
        let window = self.window();
        if window.is_zero() {
            return done();
        }
        let start = Instant::now();
        loop {
            if done() {
                return true;
            }
            if start.elapsed() >= window {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Adapts the window to a wait that took `waited` in all (spinning included): it doubles
    /// when a longer spin would have caught the wake-up, halves (to zero below `START`) when
    /// the wait was too long to spin for, and stays when the spin caught it.
    pub fn record(&self, waited: Duration) {
        let window = self.window();
        let next = if waited <= window {
            window
        } else if waited <= MAX {
            (window * 2).clamp(START, MAX)
        } else if window / 2 < START {
            Duration::ZERO
        } else {
            window / 2
        };
        self.ns.store(next.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_towards_short_waits_and_gives_up_on_long_ones() {
        let poll = PollWindow::default();
        assert_eq!(poll.window(), Duration::ZERO);
        poll.record(Duration::from_micros(50));
        assert_eq!(poll.window(), START);
        for _ in 0..3 {
            poll.record(Duration::from_micros(50));
        }
        assert_eq!(poll.window(), Duration::from_micros(80));
        // Caught by the spin: the window stays.
        poll.record(Duration::from_micros(30));
        assert_eq!(poll.window(), Duration::from_micros(80));
        // Never beyond MAX.
        for _ in 0..10 {
            poll.record(MAX);
        }
        assert_eq!(poll.window(), MAX);
        // Long waits halve it, then turn polling off.
        poll.record(Duration::from_millis(1));
        assert_eq!(poll.window(), MAX / 2);
        for _ in 0..4 {
            poll.record(Duration::from_millis(1));
        }
        assert_eq!(poll.window(), Duration::ZERO);
    }

    #[test]
    fn spins_only_within_the_window() {
        let poll = PollWindow::default();
        let mut calls = 0;
        assert!(!poll.spin_until(|| {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1, "no window: one look, no spin");
        poll.record(Duration::from_micros(50));
        let mut calls = 0;
        assert!(poll.spin_until(|| {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }
}
