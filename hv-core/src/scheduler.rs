//! The time-partitioned schedule (ARINC 653 style): a major frame repeats forever; inside it each
//! partition runs only during its windows. At a window's end the partition's vCPUs are kicked out
//! of `KVM_RUN` and parked until its next window opens.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hv_config::ScheduleConfig;

use crate::clock::Clock;
use crate::partition::Partition;

/// Window openings and closings kept for inspection.
const LOG_CAPACITY: usize = 16_384;

/// One window edge, as applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowEdge {
    /// Partition index.
    pub partition: usize,
    /// True when the window opened, false when it closed.
    pub open: bool,
    /// When, on the system trace clock (ns).
    pub at_ns: u64,
}

#[derive(Debug, Default)]
struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The running scheduler thread.
#[derive(Debug)]
pub struct Scheduler {
    control: Arc<Control>,
    log: Arc<Mutex<VecDeque<WindowEdge>>>,
    thread: Option<JoinHandle<()>>,
}

/// Window edges of one major frame: (offset, partition index, open), closes before opens at the
/// same offset.
pub(crate) fn frame_edges(
    schedule: &ScheduleConfig,
    partitions: &[Arc<Partition>],
) -> Vec<(Duration, usize, bool)> {
    let mut edges = Vec::new();
    for window in &schedule.windows {
        if let Some(p) = partitions.iter().find(|p| p.name == window.partition) {
            edges.push((Duration::from_micros(window.start_us), p.id, true));
            edges.push((
                Duration::from_micros(window.start_us + window.duration_us),
                p.id,
                false,
            ));
        }
    }
    edges.sort_by_key(|(at, _, open)| (*at, *open));
    edges
}

impl Scheduler {
    /// Starts the schedule; every partition starts outside its windows.
    pub(crate) fn start(
        schedule: &ScheduleConfig,
        partitions: Vec<Arc<Partition>>,
        clock: Arc<Clock>,
    ) -> std::io::Result<Scheduler> {
        for partition in &partitions {
            partition.set_in_window(false);
        }
        let edges = frame_edges(schedule, &partitions);
        let frame = Duration::from_micros(schedule.major_frame_us);
        let control = Arc::new(Control::default());
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let thread = {
            let control = control.clone();
            let log = log.clone();
            std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || run(&edges, frame, &partitions, &clock, &control, &log))?
        };
        Ok(Scheduler {
            control,
            log,
            thread: Some(thread),
        })
    }

    /// The most recent window edges.
    pub fn log(&self) -> Vec<WindowEdge> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        *self.control.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.control.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    edges: &[(Duration, usize, bool)],
    frame: Duration,
    partitions: &[Arc<Partition>],
    clock: &Clock,
    control: &Control,
    log: &Mutex<VecDeque<WindowEdge>>,
) {
    let mut frame_start = Instant::now();
    loop {
        for &(offset, partition, open) in edges {
            let deadline = frame_start + offset;
            let mut stop = control.stop.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if *stop {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                stop = control
                    .wake
                    .wait_timeout(stop, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            drop(stop);
            // The edge is stamped before the flag flips: no vCPU can observe an open window
            // before its logged opening.
            let at_ns = clock.now_ns();
            partitions[partition].set_in_window(open);
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() == LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(WindowEdge {
                partition,
                open,
                at_ns,
            });
        }
        frame_start += frame;
        // A host that fell more than a frame behind skips frames instead of bursting.
        let now = Instant::now();
        while frame_start + frame < now {
            frame_start += frame;
        }
    }
}
