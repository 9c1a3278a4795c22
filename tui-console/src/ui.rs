//! Drawing the console from the [`App`] state: title bar, partitions table, CPU timeline,
//! interrupts, console pane, event log, footer, overlays, and the too-small message.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use crate::app::{App, CpuActivity, HitAreas, LinkStatus, Modal, Pane};

/// Smallest usable terminal.
pub const MIN_WIDTH: u16 = 60;
/// Smallest usable terminal height.
pub const MIN_HEIGHT: u16 = 20;

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

fn state_style(kind: &str) -> Style {
    match kind {
        "running" => Style::new().fg(Color::Green),
        "paused" => Style::new().fg(Color::Yellow),
        "stopped_in_debugger" => Style::new().fg(Color::Magenta),
        "crashed" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "halted" | "exited" => Style::new().fg(Color::DarkGray),
        _ => Style::new(),
    }
}

fn activity_style(a: CpuActivity) -> Style {
    match a {
        CpuActivity::Running => Style::new().fg(Color::Green),
        CpuActivity::InHypervisor => Style::new().fg(Color::Cyan),
        CpuActivity::Halted => Style::new().fg(Color::DarkGray),
        CpuActivity::Blocked => Style::new().fg(Color::Red),
        CpuActivity::OutOfWindow => Style::new().fg(Color::Blue),
        CpuActivity::Paused => Style::new().fg(Color::Yellow),
        CpuActivity::Debugger => Style::new().fg(Color::Magenta),
        CpuActivity::Stopped => Style::new(),
    }
}

fn pane_block(app: &App, pane: Pane, title: String) -> Block<'static> {
    let focused = app.focus == pane;
    let style = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    };
    let title = if focused {
        format!(" {title} ◆ ")
    } else {
        format!(" {title} ")
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

/// Draws the whole console and records where the panes are (for the mouse).
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    app.hits = HitAreas::default();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "Terminal too small: {}x{}, the console needs at least {MIN_WIDTH}x{MIN_HEIGHT}. Enlarge it, or press q to quit.",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(msg)
                .wrap(Wrap { trim: true })
                .alignment(Alignment::Center)
                .style(Style::new().fg(Color::Yellow)),
            area,
        );
        return;
    }
    let rows = app.snapshot.as_ref().map_or(0, |s| s.partitions.len()) as u16;
    let table_h = (rows + 3).clamp(4, area.height / 3);
    let [title, table, middle, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Percentage(38),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area);
    let [timeline, irqs] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    let [console, events] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    draw_title(frame, app, title);
    draw_table(frame, app, table);
    draw_timeline(frame, app, timeline);
    draw_interrupts(frame, app, irqs);
    draw_console(frame, app, console);
    draw_events(frame, app, events);
    draw_footer(frame, app, footer);
    app.hits.panes = vec![
        (Pane::Partitions, table),
        (Pane::Timeline, timeline),
        (Pane::Interrupts, irqs),
        (Pane::Console, console),
        (Pane::Events, events),
    ];
    match app.modal.clone() {
        Some(Modal::Help) => draw_help(frame, area),
        Some(Modal::ConfirmReset(p)) => draw_prompt(
            frame,
            area,
            " Reset ",
            &format!(
                "Reset partition {p}? Its guest restarts from its image.  y = reset, any other key = cancel"
            ),
        ),
        Some(Modal::IrqPrompt { partition, input }) => draw_prompt(
            frame,
            area,
            " Inject IRQ ",
            &format!(
                "Vector to inject into {partition} vCPU 0 (32..=255, decimal or 0x hex): {input}▏  Enter = inject, Esc = cancel"
            ),
        ),
        None => {}
    }
}

fn draw_title(frame: &mut Frame, app: &App, area: Rect) {
    let system = if app.system.is_empty() {
        "hv console".to_owned()
    } else {
        format!("hv console — {}", app.system)
    };
    let (link, style) = match &app.link {
        LinkStatus::Connecting => ("connecting…".to_owned(), Style::new().fg(Color::Yellow)),
        LinkStatus::Up { addr } => (format!("link {addr}"), Style::new().fg(Color::Green)),
        LinkStatus::Down { reason } => (
            format!("LINK DOWN: {reason} — reconnecting…"),
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ),
    };
    let stats = match &app.snapshot {
        Some(s) if !s.stats => "  (no counters: rates -)",
        _ => "",
    };
    let rec = match &app.recording {
        Some(Some(p)) => format!("  ● REC {}", p.display()),
        Some(None) => "  ● LIVE TRACE".to_owned(),
        None => String::new(),
    };
    let line = Line::from(vec![
        Span::styled(system, Style::new().add_modifier(Modifier::BOLD)),
        Span::raw("  "),
        Span::styled(link, style),
        Span::styled(
            rec,
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        Span::styled(stats, Style::new().fg(Color::DarkGray)),
        Span::raw("   ? help"),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_table(frame: &mut Frame, app: &mut App, area: Rect) {
    let block = pane_block(app, Pane::Partitions, "Partitions".into());
    let header = Row::new(
        [
            "ID", "Name", "State", "vCPUs", "CPU %", "Exits/s", "IRQs/s", "Hcalls/s", "Lost",
        ]
        .map(|h| Cell::from(h).style(Style::new().add_modifier(Modifier::BOLD))),
    );
    let rows: Vec<Row> = app
        .snapshot
        .iter()
        .flat_map(|s| s.partitions.iter())
        .enumerate()
        .map(|(i, p)| {
            let vcpus = p
                .vcpus
                .iter()
                .map(|v| CpuActivity::from_vcpu(v.state).symbol())
                .map(|c| if c == ' ' { '-' } else { c })
                .collect::<String>();
            let row = Row::new(vec![
                Cell::from(p.id.to_string()),
                Cell::from(p.name.clone()),
                Cell::from(p.state_text.clone()).style(state_style(&p.state)),
                Cell::from(format!("{} {vcpus}", p.vcpus.len())),
                Cell::from(opt(p.cpu_pct, 1)),
                Cell::from(opt(p.exits_per_s, 0)),
                Cell::from(opt(p.irqs_per_s, 0)),
                Cell::from(opt(p.hypercalls_per_s, 0)),
                Cell::from(p.lost_records.map_or("-".into(), |n| n.to_string())),
            ]);
            if i == app.selected {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    // Names and states as wide as the longest (within reason); the rest of a wide terminal stays
    // empty on the right rather than stretching the state column.
    let state_width = app
        .snapshot
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| p.state_text.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(8, 40) as u16;
    let name_width = app
        .snapshot
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 24) as u16;
    let inner = block.inner(area);
    app.hits.table_rows = Some(Rect {
        y: inner.y + 1,
        height: inner.height.saturating_sub(1),
        ..inner
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Length(name_width),
            Constraint::Length(state_width),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(6),
        ],
    )
    .header(header)
    .block(block);
    frame.render_widget(table, area);
}

fn draw_timeline(frame: &mut Frame, app: &App, area: Rect) {
    let selected = app.selected_name().unwrap_or("-").to_owned();
    let block = pane_block(app, Pane::Timeline, "CPU timeline (per vCPU)".into());
    let inner = block.inner(area);
    let label_w = 13;
    // Columns: label, lane, the vCPU's CPU % (5 wide).
    let width = (inner.width as usize).saturating_sub(label_w + 5);
    let mut lines = Vec::new();
    let names: Vec<&str> = app
        .snapshot
        .iter()
        .flat_map(|s| s.partitions.iter().map(|p| p.name.as_str()))
        .collect();
    for name in names {
        let Some(lanes) = app.timelines.get(name) else {
            continue;
        };
        let label_style = if name == selected {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new()
        };
        for (i, lane) in lanes.iter().enumerate() {
            let short: String = name.chars().take(label_w - 4).collect();
            let mut spans = vec![
                Span::styled(
                    format!("{:<w$}", format!("{short}/{i}"), w = label_w - 1),
                    label_style,
                ),
                Span::raw(" "),
            ];
            let pad = width.saturating_sub(lane.len());
            spans.push(Span::raw(" ".repeat(pad)));
            for a in lane.iter().skip(lane.len().saturating_sub(width)) {
                spans.push(Span::styled(a.symbol().to_string(), activity_style(*a)));
            }
            let pct = app
                .snapshot
                .as_ref()
                .and_then(|s| s.partition(name))
                .and_then(|p| p.vcpus.get(i))
                .and_then(|v| v.cpu_pct)
                .map_or(String::new(), |p| format!("{p:>4.0}%"));
            spans.push(Span::raw(format!("{pct:>5}")));
            lines.push(Line::from(spans));
        }
    }
    if lines.is_empty() {
        lines.push(Line::from("no samples yet"));
    } else {
        lines.push(Line::from(Span::styled(
            format!(
                "{:>w$}",
                format!("← {:.0} s   now", width as f64 / 10.0),
                w = width + label_w
            ),
            Style::new().fg(Color::DarkGray),
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn sparkline(values: impl Iterator<Item = f64> + Clone, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.clone().fold(0.0_f64, f64::max);
    let v: Vec<f64> = values.collect();
    let start = v.len().saturating_sub(width);
    v[start..]
        .iter()
        .map(|x| {
            if max <= 0.0 {
                BARS[0]
            } else {
                BARS[((x / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.1}ms", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.1}µs", v as f64 / 1e3)
    } else {
        format!("{v}ns")
    }
}

fn draw_interrupts(frame: &mut Frame, app: &App, area: Rect) {
    let irqs = app
        .snapshot
        .as_ref()
        .map(|s| &s.interrupts[..])
        .unwrap_or(&[]);
    // Latency columns only when some vector has latency data (from trace records).
    let latency = irqs.iter().any(|i| i.latency.is_some());
    let title = if latency {
        "Interrupts (latency since raise)"
    } else {
        "Interrupts"
    };
    let block = pane_block(app, Pane::Interrupts, title.into());
    let inner_w = block.inner(area).width as usize;
    let mut head = format!("{:<10} {:>3} {:>7}", "partition", "vec", "/s");
    if latency {
        head.push_str(&format!(" {:>7} {:>7} {:>7}", "p50", "p99", "max"));
    }
    // Raise-to-EOI where there is room (the columns before are raise-to-injection).
    let eoi = latency && inner_w >= head.chars().count() + 8;
    if eoi {
        head.push_str(&format!(" {:>7}", "EOI p99"));
    }
    if inner_w >= head.chars().count() + 7 {
        head.push_str(" trend");
    }
    let mut lines = vec![Line::from(Span::styled(
        head,
        Style::new().add_modifier(Modifier::BOLD),
    ))];
    if irqs.is_empty() {
        lines.push(Line::from(Span::styled(
            "no interrupt counters from this agent",
            Style::new().fg(Color::DarkGray),
        )));
    }
    let selected = app.selected_name();
    for irq in irqs {
        let mut text = format!(
            "{:<10} {:>3} {:>7}",
            irq.partition.chars().take(10).collect::<String>(),
            irq.vector,
            opt(irq.per_s, 0),
        );
        if latency {
            match irq.latency {
                Some(l) => text.push_str(&format!(
                    " {:>7} {:>7} {:>7}",
                    ns(l.p50_ns),
                    ns(l.p99_ns),
                    ns(l.max_ns)
                )),
                None => text.push_str(&format!(" {:>7} {:>7} {:>7}", "-", "-", "-")),
            }
        }
        if eoi {
            let p99 = irq.eoi_latency.map_or("-".to_owned(), |l| ns(l.p99_ns));
            text.push_str(&format!(" {p99:>7}"));
        }
        let spark_w = inner_w.saturating_sub(text.chars().count() + 1);
        let spark = app
            .irq_history
            .get(&(irq.partition.clone(), irq.vector))
            .map(|h| sparkline(h.iter().copied(), spark_w))
            .unwrap_or_default();
        let style = if Some(irq.partition.as_str()) == selected {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(text, style),
            Span::raw(" "),
            Span::styled(spark, Style::new().fg(Color::Cyan)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_console(frame: &mut Frame, app: &App, area: Rect) {
    let name = app.watched.clone().unwrap_or_else(|| "-".into());
    let hint = if app.typing {
        "TYPING → guest, Esc stops"
    } else {
        "c to type"
    };
    let block = pane_block(app, Pane::Console, format!("Console: {name} ({hint})"));
    let h = block.inner(area).height as usize;
    let lines: Vec<&str> = app
        .consoles
        .get(&name)
        .map(|c| c.all_lines().collect())
        .unwrap_or_default();
    let end = lines.len().saturating_sub(app.console_scroll);
    let start = end.saturating_sub(h);
    let text: Vec<Line> = lines[start..end].iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(Paragraph::new(text).block(block), area);
}

fn draw_events(frame: &mut Frame, app: &App, area: Rect) {
    let block = pane_block(app, Pane::Events, "Events".into());
    let h = block.inner(area).height as usize;
    let end = app.events.len().saturating_sub(app.events_scroll);
    let start = end.saturating_sub(h);
    let lines: Vec<Line> = app
        .events
        .range(start..end)
        .map(|e| {
            let style = if e.alert {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::styled(
                    format!("{:>7.1}s ", e.at_ms as f64 / 1000.0),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::styled(e.text.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// What the keys do in the focused pane (the footer; the help overlay has them all).
pub fn footer_keys(app: &App) -> String {
    const ACTIONS: &str = "p pause  r resume  R reset  i IRQ  t record  L live trace";
    if app.typing {
        let name = app.watched.as_deref().unwrap_or("-");
        return format!(
            "typing into {name}'s UART: keys go to the guest  Esc stop typing  Tab next pane  PgUp/PgDn scroll  Ctrl-C quit"
        );
    }
    // The focused pane's own keys and the way out first: a narrow terminal cuts the end.
    let pane = match app.focus {
        Pane::Partitions | Pane::Timeline | Pane::Interrupts => "↑↓ select  c type",
        Pane::Console => "c/Enter type into guest  ↑↓ PgUp/PgDn scroll",
        Pane::Events => "↑↓ PgUp/PgDn scroll log  c type",
    };
    format!("{pane}  Tab pane  ? help  q quit  │ {ACTIONS}")
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.status {
        Some((msg, true)) => Line::from(Span::styled(msg.clone(), Style::new().fg(Color::Red))),
        Some((msg, false)) => Line::from(msg.clone()),
        None if app.typing => Line::from(Span::styled(
            footer_keys(app),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        )),
        None => Line::from(Span::styled(
            footer_keys(app),
            Style::new().fg(Color::DarkGray),
        )),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// The help overlay's text.
pub const HELP: &[&str] = &[
    "Keys",
    "  ↑↓ / j k     select a partition (scroll in the console and event log)",
    "  ←→ / h l     previous / next pane     Tab / Shift-Tab too",
    "  g / G        first / last partition",
    "  p / r        pause / resume the selected partition",
    "  R            reset it (asks first)",
    "  i            inject an IRQ (asks for the vector)",
    "  c            type into its console (Enter too, in the console pane);",
    "               Esc stops typing. Focusing the console pane does not type",
    "  PgUp / PgDn  scroll the console or the event log",
    "  t            record the trace to hv-trace-<system>-<time>.hvt, t saves",
    "  L            stop / start following the trace live (on by default)",
    "  ?            this help          q / Esc / Ctrl-C  quit",
    "Mouse: click a pane to focus it, a row to select it; wheel scrolls.",
    "",
    "CPU timeline (one column per tick, newest right)",
    "  █ running  ▓ in hypervisor  _ halted  b blocked  · outside window",
    "  P paused   D stopped by debugger   (blank) not running",
    "",
    "Interrupt latency (from the trace): raise to injection p50/p99/max,",
    "and raise to the guest's EOI (p99, on wide terminals).",
    "Rates are per second between samples; CPU % is of one host CPU,",
    "summed over vCPUs. Press any key to close.",
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let r = centered(area, 76, HELP.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let lines: Vec<Line> = HELP.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" Help ")
                .border_style(Style::new().fg(Color::Cyan)),
        ),
        r,
    );
}

fn draw_prompt(frame: &mut Frame, area: Rect, title: &str, text: &str) {
    let r = centered(area, 60, 5);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(text.to_owned())
            .wrap(Wrap { trim: true })
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(title.to_owned())
                    .border_style(Style::new().fg(Color::Yellow)),
            ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::demo_app;
    use crate::collector::Update;
    use crate::model::{IrqRow, Latency};
    use hv_link::PartitionState;
    use hv_link::control::StateChangedParams;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn render(app: &mut App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let mut line = String::new();
            for x in 0..buf.area.width {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// A recorded state: demo partitions with counters, console output, events, timelines.
    fn recorded() -> App {
        let mut app = demo_app();
        {
            let s = app.snapshot.as_mut().unwrap();
            s.stats = true;
            let p = &mut s.partitions[0];
            p.cpu_pct = Some(12.5);
            p.vcpus[0].cpu_pct = Some(12.5);
            p.exits_per_s = Some(2100.0);
            p.irqs_per_s = Some(1001.0);
            p.hypercalls_per_s = Some(1050.0);
            p.lost_records = Some(0);
            s.interrupts = vec![
                IrqRow {
                    partition: "control".into(),
                    vector: 32,
                    per_s: Some(1000.0),
                    total: 52_000,
                    latency: Some(Latency {
                        p50_ns: 2_300,
                        p99_ns: 14_000,
                        max_ns: 1_200_000,
                    }),
                    eoi_latency: Some(Latency {
                        p50_ns: 9_100,
                        p99_ns: 31_000,
                        max_ns: 1_500_000,
                    }),
                },
                IrqRow {
                    partition: "telemetry".into(),
                    vector: 48,
                    per_s: Some(1.0),
                    total: 52,
                    latency: None,
                    eoi_latency: None,
                },
            ];
        }
        for i in 0..30 {
            app.irq_history
                .entry(("control".into(), 32))
                .or_default()
                .push_back(990.0 + (i % 5) as f64 * 5.0);
        }
        for i in 0..40 {
            if i == 20 {
                let s = app.snapshot.as_mut().unwrap();
                s.partitions[0].vcpus[0].state = hv_link::VcpuState::Halted;
            }
            if i == 30 {
                let s = app.snapshot.as_mut().unwrap();
                s.partitions[0].vcpus[0].state = hv_link::VcpuState::Paused;
            }
            app.sample_timelines();
        }
        app.apply(
            Update::Console {
                partition: "control".into(),
                bytes: b"control: boot\ncontrol: tick 1 sample=42\ncontrol: tick 2 sample=43\n"
                    .to_vec(),
            },
            100,
        );
        app.apply(
            Update::StateChanged(StateChangedParams {
                partition: "worker".into(),
                state: PartitionState::Paused,
                detail: None,
            }),
            2500,
        );
        app
    }

    #[test]
    fn main_view() {
        let mut app = recorded();
        insta::assert_snapshot!(render(&mut app, 100, 32));
        assert!(app.hits.table_rows.is_some());
    }

    #[test]
    fn wide_view_shows_latency_to_eoi() {
        let mut app = recorded();
        let out = render(&mut app, 130, 32);
        assert!(out.contains("EOI p99"), "{out}");
        let row = out
            .lines()
            .find(|l| l.contains("control     32"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(row.contains("14.0µs") && row.contains("31.0µs"), "{row}");
    }

    #[test]
    fn without_counters() {
        let mut app = demo_app();
        app.sample_timelines();
        insta::assert_snapshot!(render(&mut app, 80, 24));
    }

    #[test]
    fn help_overlay() {
        let mut app = recorded();
        app.modal = Some(Modal::Help);
        insta::assert_snapshot!(render(&mut app, 100, 32));
    }

    #[test]
    fn reset_confirmation_and_irq_prompt() {
        let mut app = recorded();
        app.modal = Some(Modal::ConfirmReset("control".into()));
        insta::assert_snapshot!("reset_confirmation", render(&mut app, 80, 24));
        app.modal = Some(Modal::IrqPrompt {
            partition: "control".into(),
            input: "0x30".into(),
        });
        insta::assert_snapshot!("irq_prompt", render(&mut app, 80, 24));
    }

    #[test]
    fn link_down_and_console_focus() {
        let mut app = recorded();
        app.focus = Pane::Console;
        app.apply(
            Update::LinkDown {
                reason: "the server closed the connection".into(),
            },
            4000,
        );
        insta::assert_snapshot!(render(&mut app, 100, 32));
    }

    #[test]
    fn client_blocked_on_a_device_model() {
        let mut b = crate::model::SnapshotBuilder::new("demo");
        let snapshot = b.build(crate::model::RawSample {
            partitions: vec![
                crate::model::tests::info(
                    0,
                    "control",
                    PartitionState::Running,
                    &[hv_link::VcpuState::BlockedOnDevice],
                ),
                crate::model::tests::info(
                    3,
                    "sensor-model",
                    PartitionState::StoppedInDebugger,
                    &[hv_link::VcpuState::StoppedInDebugger],
                ),
            ],
            stats: None,
            taken_at: std::time::Instant::now(),
        });
        let mut app = App::new();
        app.apply(Update::Snapshot(snapshot), 0);
        let out = render(&mut app, 100, 24);
        let row = out.lines().find(|l| l.contains("control")).unwrap();
        assert!(row.contains("running, blocked on sensor"), "{out}");
        assert!(row.contains("1 b"), "{out}");
    }

    #[test]
    fn the_footer_says_what_the_keys_do_in_each_pane() {
        let mut app = recorded();
        let footer = |app: &mut App| render(app, 160, 32).lines().nth(31).unwrap().to_owned();
        for pane in [Pane::Partitions, Pane::Timeline, Pane::Interrupts] {
            app.focus = pane;
            let line = footer(&mut app);
            assert!(
                line.starts_with("↑↓ select  c type  Tab pane  ? help  q quit"),
                "{pane:?}: {line}"
            );
            assert!(
                line.ends_with("p pause  r resume  R reset  i IRQ  t record  L live trace"),
                "{line}"
            );
        }
        app.focus = Pane::Console;
        let line = footer(&mut app);
        assert!(
            line.starts_with(
                "c/Enter type into guest  ↑↓ PgUp/PgDn scroll  Tab pane  ? help  q quit"
            ),
            "{line}"
        );
        let screen = render(&mut app, 160, 32);
        assert!(
            screen.contains("Console: control (c to type) ◆"),
            "{screen}"
        );
        app.focus = Pane::Events;
        assert!(footer(&mut app).starts_with("↑↓ PgUp/PgDn scroll log  c type  Tab pane"));
        // Typing: the footer and the console's title say where keys go and how to stop.
        app.on_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('c'),
        ));
        let screen = render(&mut app, 160, 32);
        let line = screen.lines().nth(31).unwrap();
        assert!(
            line.starts_with("typing into control's UART: keys go to the guest  Esc stop typing"),
            "{line}"
        );
        assert!(
            screen.contains("Console: control (TYPING → guest, Esc stops) ◆"),
            "{screen}"
        );
        // A command's outcome takes the footer until the next key.
        app.typing = false;
        app.status = Some(("reset control: cancelled".into(), false));
        assert_eq!(footer(&mut app), "reset control: cancelled");
        app.on_key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Tab,
        ));
        assert!(footer(&mut app).contains("q quit"));
    }

    #[test]
    fn a_debugger_stop_shows_in_the_event_log() {
        let mut app = recorded();
        for (state, detail) in [
            (
                PartitionState::StoppedInDebugger,
                "debugger attached to the partition",
            ),
            (
                PartitionState::StoppedInDebugger,
                "breakpoint on vCPU 0 at 0x101a2c",
            ),
            (
                PartitionState::Running,
                "debugger detached from the partition",
            ),
        ] {
            app.apply(
                Update::StateChanged(StateChangedParams {
                    partition: "control".into(),
                    state,
                    detail: Some(detail.into()),
                }),
                3000,
            );
        }
        let screen = render(&mut app, 220, 40);
        for line in [
            "control: stopped in debugger (breakpoint on vCPU 0 at 0x101a2c)",
            "control: running (debugger detached from the partition)",
        ] {
            assert!(screen.contains(line), "{line}:\n{screen}");
        }
        let stop = app
            .events
            .iter()
            .find(|e| e.text.contains("breakpoint"))
            .unwrap();
        assert!(stop.alert);
    }

    #[test]
    fn the_state_column_is_as_wide_as_its_longest_state() {
        let mut app = recorded();
        let out = render(&mut app, 200, 32);
        let header = out.lines().find(|l| l.contains("State")).unwrap();
        let gap = header.find("vCPUs").unwrap() - header.find("State").unwrap();
        assert!(gap < 30, "{header}");
    }

    #[test]
    fn too_small() {
        let mut app = recorded();
        let out = render(&mut app, 40, 10);
        assert!(out.contains("Terminal too small: 40x10"), "{out}");
        insta::assert_snapshot!(out);
    }
}
