//! A cheap monotonic clock for trace timestamps: the TSC, calibrated once against
//! `CLOCK_MONOTONIC` and converted to nanoseconds since the clock was created.

use std::time::{Duration, Instant};

/// TSC-based nanosecond clock.
#[derive(Debug, Clone)]
pub struct Clock {
    base_tsc: u64,
    /// ns per tick as a 32.32 fixed-point multiplier.
    mult: u64,
    /// Host time at `base_tsc`.
    epoch: Instant,
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Clock {
    /// The process-wide clock, calibrated on first use (so every system and trace in one process
    /// shares one time base, and only the first system start pays for calibration).
    pub fn shared() -> &'static Clock {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        CLOCK.get_or_init(Clock::calibrate)
    }

    /// Calibrates over a few milliseconds.
    pub fn calibrate() -> Clock {
        let epoch = Instant::now();
        let base_tsc = rdtsc();
        std::thread::sleep(Duration::from_millis(20));
        let ticks = rdtsc().wrapping_sub(base_tsc).max(1);
        let ns = epoch.elapsed().as_nanos() as u64;
        let mult = ((u128::from(ns) << 32) / u128::from(ticks)) as u64;
        Clock {
            base_tsc,
            mult,
            epoch,
        }
    }

    /// Nanoseconds since calibration.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.ticks_to_ns(rdtsc().wrapping_sub(self.base_tsc))
    }

    /// Converts a TSC delta to ns.
    #[inline]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64
    }

    /// The host instant the clock counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Frequency as measured, in kHz (for trace file headers).
    pub fn tsc_khz(&self) -> u64 {
        ((1u128 << 32) * 1_000_000 / u128::from(self.mult.max(1))) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_host_clock() {
        let clock = Clock::calibrate();
        let start = clock.now_ns();
        let host = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let ours = clock.now_ns() - start;
        let theirs = host.elapsed().as_nanos() as u64;
        // generous: this machine is shared; the point is units (ns, not ticks or µs)
        assert!(ours > theirs / 2 && ours < theirs * 2, "{ours} vs {theirs}");
        assert!(clock.tsc_khz() > 100_000);
    }
}
