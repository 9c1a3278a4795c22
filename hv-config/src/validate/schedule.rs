//! The `[schedule]`: major frame, windows, partitions in no window.

use super::*;

impl Validator<'_> {
    pub(super) fn schedule(
        &mut self,
        raw: &RawDocument,
        parts: &[Part<'_>],
        lookup: &Lookup<'_>,
    ) -> Option<ScheduleConfig> {
        let sched = raw.schedule.as_ref()?;
        let major = sched.major_frame_us.as_ref().map(|m| {
            if *m.get_ref() == 0 {
                self.error(m.span(), "`major_frame_us` must not be zero")
                    .label("empty major frame");
            }
            *m.get_ref()
        });
        if sched.windows.is_empty() {
            self.error(sched.span.clone(), "the schedule has no windows")
                .label("no [[schedule.window]] follows")
                .note("add a [[schedule.window]] with `partition`, `start_us` and `duration_us` for each partition");
        }
        let mut checked: Vec<(usize, u64, u64, Range<usize>)> = Vec::new();
        let mut scheduled = vec![false; parts.len()];
        for w in &sched.windows {
            let part = w
                .partition
                .as_ref()
                .and_then(|p| self.resolve(lookup, p, "window"));
            if let Some(p) = part {
                scheduled[p] = true;
            }
            let (Some(start), Some(duration)) = (&w.start_us, &w.duration_us) else {
                continue;
            };
            let (s, d) = (*start.get_ref(), *duration.get_ref());
            if d == 0 {
                self.error(duration.span(), "schedule window has zero duration")
                    .label("`duration_us` = 0")
                    .note("remove the window or give it a duration");
                continue;
            }
            let end = s.saturating_add(d);
            if let Some(major) = major.filter(|&m| m > 0 && end > m) {
                let span = sched
                    .major_frame_us
                    .as_ref()
                    .map_or(sched.span.clone(), Spanned::span);
                self.error(
                    duration.span(),
                    format!("schedule window ends at {end} µs, after the major frame"),
                )
                .label(format!("{s} + {d} > {major}"))
                .related(span, format!("the major frame is {major} µs"));
                continue;
            }
            if let Some(p) = part {
                let overlap = checked
                    .iter()
                    .find(|(q, qs, qe, _)| *q == p && s < *qe && *qs < end);
                if let Some((_, qs, qe, qspan)) = overlap {
                    let qspan = qspan.clone();
                    self.error(
                        start.span(),
                        format!(
                            "schedule windows of partition `{}` overlap",
                            parts[p].label()
                        ),
                    )
                    .label(format!("{s}..{end} µs"))
                    .related(qspan, format!("overlaps this window ({qs}..{qe} µs)"))
                    .note("merge the windows or make them disjoint");
                }
                checked.push((p, s, end, start.span()));
            }
        }
        for (p, part) in parts.iter().enumerate() {
            let first_of_name = part
                .name
                .is_some_and(|n| lookup.index.get(n.get_ref().as_str()) == Some(&p));
            if !scheduled[p] && first_of_name {
                self.warning(
                    part.anchor(),
                    format!(
                        "partition `{}` has no schedule window; it never runs",
                        part.label()
                    ),
                )
                .label("not in [schedule]")
                .related(sched.span.clone(), "the schedule");
            }
        }
        Some(ScheduleConfig {
            major_frame_us: major.unwrap_or_default(),
            windows: sched
                .windows
                .iter()
                .map(|w| WindowConfig {
                    partition: w
                        .partition
                        .as_ref()
                        .map(|p| p.get_ref().clone())
                        .unwrap_or_default(),
                    start_us: w.start_us.as_ref().map_or(0, |s| *s.get_ref()),
                    duration_us: w.duration_us.as_ref().map_or(0, |d| *d.get_ref()),
                })
                .collect(),
        })
    }
}
