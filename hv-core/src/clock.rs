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

#[inline]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A host instant and the TSC at that instant: the midpoint of the two TSC reads around it, from
/// the attempt whose reads were closest together.
fn paired_reading() -> (Instant, u64) {
    let mut best = (Instant::now(), 0, u64::MAX);
    for _ in 0..8 {
        let before = rdtsc();
        let now = Instant::now();
        let window = rdtsc().wrapping_sub(before);
        if window < best.2 {
            best = (now, before.wrapping_add(window / 2), window);
        }
    }
    (best.0, best.1)
}

impl Clock {
    /// The process-wide clock, calibrated on first use (so every system and trace in one process
    /// shares one time base, and only the first system start pays for calibration).
    pub fn shared() -> &'static Clock {
        static CLOCK: std::sync::OnceLock<Clock> = std::sync::OnceLock::new();
        CLOCK.get_or_init(Clock::calibrate)
    }

    /// Calibrates over about 20 ms. Each end of the interval is a host-time reading bracketed by
    /// two TSC reads, the tightest of several, so that a preemption between the reads of a pair
    /// cannot skew the rate (one 1 ms preemption in an unbracketed pair would make it 5% off).
    pub fn calibrate() -> Clock {
        let (epoch, base_tsc) = paired_reading();
        std::thread::sleep(Duration::from_millis(20));
        let (end, end_tsc) = paired_reading();
        let ticks = end_tsc.wrapping_sub(base_tsc).max(1);
        let ns = end.duration_since(epoch).as_nanos() as u64;
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
