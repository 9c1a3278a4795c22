//! Tests of the system description's checks, one per diagnostic family.

use super::*;
use crate::image::test_elf::{self, Seg};
use crate::tests::{Fixture, expect};

/// Two valid partitions, `control` and `model`, on lines 1..=7; tests append from line 8.
const TWO: &str = "[[partition]]\nname = \"control\"\nimage = \"guest.elf\"\n\n[[partition]]\nname = \"model\"\nimage = \"guest.elf\"\n";

fn with_two(rest: &str) -> String {
    format!("{TWO}{rest}")
}

#[test]
fn syntax_error() {
    let fx = Fixture::new();
    let diags = fx.errors(&with_two("[[channel]\nname = \"c\"\n"));
    expect(
        &diags,
        "TOML syntax: unclosed array table, expected `]`",
        8,
        11,
    );
    assert_eq!(diags.len(), 1, "only the syntax error:\n{}", diags.render());
}

#[test]
fn unknown_key() {
    let fx = Fixture::new();
    let src =
        with_two("[[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\nvectr = 50\n");
    let diags = fx.errors(&src);
    let i = expect(&diags, "unknown key `vectr` in [[channel]]", 11, 1);
    assert_eq!(
        diags.iter().nth(i).unwrap().notes,
        ["did you mean `vector`?"]
    );
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nwhatever = 1\n");
    let i = expect(&diags, "unknown key `whatever` in [[partition]]", 4, 1);
    assert!(diags.iter().nth(i).unwrap().notes[0].starts_with("expected one of: `name`, `image`"));
}

#[test]
fn wrong_types() {
    let fx = Fixture::new();
    let src =
        with_two("[[channel]]\nname = \"c\"\nendpoints = [\"control\", 7]\nvector = \"48\"\n");
    let diags = fx.errors(&src);
    expect(
        &diags,
        "each `endpoints` entry must be a string, found an integer",
        10,
        25,
    );
    expect(
        &diags,
        "`vector` must be an integer, found a string",
        11,
        10,
    );
    let diags = fx.errors("partition = 3\n");
    expect(
        &diags,
        "`partition` must be an array of tables, found an integer",
        1,
        13,
    );
}

#[test]
fn missing_required_key() {
    let fx = Fixture::new();
    let diags = fx.errors("[[partition]]\nname = \"a\"\n");
    expect(
        &diags,
        "missing required key `image` in [[partition]]",
        1,
        1,
    );
}

#[test]
fn bad_sizes() {
    let fx = Fixture::new();
    let src = "[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nmemory = \"16Q\"\n\
               [[partition]]\nname = \"b\"\nimage = \"guest.elf\"\nmemory = 4097\n\
               [[partition]]\nname = \"c\"\nimage = \"guest.elf\"\nmemory = \"4G\"\n\
               [[channel]]\nname = \"x\"\nendpoints = [\"a\", \"b\"]\nsize = \"32M\"\nvector = 50\n\
               [[channel]]\nname = \"y\"\nendpoints = [\"a\", \"c\"]\nsize = 6000\nvector = 51\n";
    let diags = fx.errors(src);
    expect(
        &diags,
        "invalid size for `memory`: unknown suffix \"Q\"",
        4,
        10,
    );
    expect(
        &diags,
        "`memory` (4097 bytes) is not a multiple of 4 KiB",
        8,
        10,
    );
    expect(&diags, "`memory` (4G) is out of range", 12, 10);
    expect(&diags, "channel `size` (32M) is out of range", 16, 8);
    expect(
        &diags,
        "channel `size` (6000 bytes) is not a multiple of 4 KiB",
        21,
        8,
    );
}

#[test]
fn vcpus_out_of_range() {
    let fx = Fixture::new();
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nvcpus = 17\n");
    expect(&diags, "`vcpus` = 17 is out of range", 4, 9);
}

#[test]
fn invalid_names() {
    let fx = Fixture::new();
    let diags = fx.errors(
        "[system]\nname = \"my demo\"\n[[partition]]\nname = \"Control\"\nimage = \"guest.elf\"\n",
    );
    expect(&diags, "invalid system name", 2, 8);
    let i = expect(&diags, "partition name `Control` contains 'C'", 4, 8);
    assert!(
        diags
            .iter()
            .nth(i)
            .unwrap()
            .notes
            .contains(&"try `control`".to_owned())
    );
    let long = "x".repeat(32);
    let diags = fx.errors(&format!(
        "[[partition]]\nname = \"{long}\"\nimage = \"guest.elf\"\n"
    ));
    expect(
        &diags,
        &format!("partition name `{long}` is longer than 31 characters"),
        2,
        8,
    );
}

#[test]
fn duplicate_names() {
    let fx = Fixture::new();
    let src = with_two(
        "[[partition]]\nname = \"model\"\nimage = \"guest.elf\"\n\
         [[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\n\
         [[channel]]\nname = \"c\"\nendpoints = [\"control\", \"model\"]\nvector = 49\n\
         [[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n\
         [[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = { base = 0xD000_1000, size = 0x1000 }\n",
    );
    let diags = fx.errors(&src);
    let i = expect(&diags, "duplicate partition name `model`", 9, 8);
    let d = diags.iter().nth(i).unwrap();
    assert_eq!(d.related.len(), 1);
    assert_eq!(&src[d.related[0].0.clone()], "\"model\"");
    assert!(diags.render().contains("first defined here"));
    expect(&diags, "duplicate channel name `c`", 15, 8);
    expect(&diags, "duplicate device name `d`", 24, 8);
}

#[test]
fn unknown_references_suggest_close_names() {
    let fx = Fixture::new();
    let src = with_two(
        "[[channel]]\nname = \"c\"\nendpoints = [\"contrl\", \"model\"]\n\
         [[device]]\nname = \"d\"\npartition = \"modle\"\nserved_by = \"sensor\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n\
         [schedule]\nmajor_frame_us = 100\n[[schedule.window]]\npartition = \"Control\"\nstart_us = 0\nduration_us = 10\n",
    );
    let diags = fx.errors(&src);
    let note = |i: usize| diags.iter().nth(i).unwrap().notes.clone();
    let i = expect(&diags, "unknown partition `contrl`", 10, 14);
    assert_eq!(note(i), ["did you mean `control`?"]);
    let i = expect(&diags, "unknown partition `modle`", 13, 13);
    assert_eq!(note(i), ["did you mean `model`?"]);
    let i = expect(&diags, "unknown partition `sensor`", 14, 13);
    assert_eq!(note(i), ["defined partitions: `control`, `model`"]);
    let i = expect(&diags, "unknown partition `Control`", 19, 13);
    assert_eq!(note(i), ["did you mean `control`?"]);
}

#[test]
fn channel_endpoints() {
    let fx = Fixture::new();
    let src = with_two(
        "[[channel]]\nname = \"self\"\nendpoints = [\"control\", \"control\"]\n\
         [[channel]]\nname = \"three\"\nendpoints = [\"control\", \"model\", \"model\"]\nvector = 49\n",
    );
    let diags = fx.errors(&src);
    expect(
        &diags,
        "channel connects partition `control` to itself",
        10,
        25,
    );
    expect(&diags, "a channel has exactly two endpoints, not 3", 13, 13);
}

#[test]
fn device_served_by_its_client() {
    let fx = Fixture::new();
    let src = with_two(
        "[[device]]\nname = \"d\"\npartition = \"control\"\nserved_by = \"control\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n",
    );
    let diags = fx.errors(&src);
    expect(
        &diags,
        "device is served by its own client `control`",
        11,
        13,
    );
}

#[test]
fn device_without_a_model() {
    let fx = Fixture::new();
    let src = with_two(
        "[[device]]\nname = \"uart2\"\npartition = \"control\"\nmmio = { base = 0xD000_0000, size = 0x1000 }\n",
    );
    let diags = fx.errors(&src);
    expect(
        &diags,
        "device `uart2` has no `served_by` and is not a built-in device",
        9,
        8,
    );
}

fn device(name: &str, mmio: &str, extra: &str) -> String {
    format!(
        "[[device]]\nname = \"{name}\"\npartition = \"control\"\nserved_by = \"model\"\nmmio = {mmio}\n{extra}"
    )
}

#[test]
fn mmio_placement() {
    let fx = Fixture::new();
    let src = with_two(
        &[
            device("ram", "{ base = 0x100000, size = 0x1000 }", ""),
            device("ipc", "{ base = 0x8000_0000, size = 0x1000 }", ""),
            device("high", "{ base = 0xFFFF_F000, size = 0x2000 }", ""),
            device("odd", "{ base = 0xD000_0800, size = 0x800 }", ""),
        ]
        .concat(),
    );
    let diags = fx.errors(&src);
    expect(
        &diags,
        "MMIO range 0x100000..0x101000 overlaps the partition's RAM",
        12,
        8,
    );
    expect(
        &diags,
        "MMIO range 0x80000000..0x80001000 overlaps the IPC area",
        17,
        8,
    );
    expect(
        &diags,
        "MMIO range at 0xfffff000 extends beyond 4 GiB",
        22,
        8,
    );
    expect(&diags, "MMIO base 0xd0000800 is not 4 KiB aligned", 27, 17);
    expect(
        &diags,
        "MMIO size 0x800 is not a non-zero multiple of 4 KiB",
        27,
        37,
    );
}

#[test]
fn overlapping_mmio_in_one_partition() {
    let fx = Fixture::new();
    let src = with_two(
        &[
            device("a", "{ base = 0xD000_0000, size = 0x2000 }", ""),
            device("b", "{ base = 0xD000_1000, size = 0x1000 }", ""),
        ]
        .concat(),
    );
    let diags = fx.errors(&src);
    let i = expect(
        &diags,
        "MMIO range of device `b` overlaps device `a`",
        17,
        8,
    );
    assert_eq!(
        diags.iter().nth(i).unwrap().related[0].1,
        "`a` is mapped here"
    );
    assert_eq!(
        diags.len(),
        1,
        "shared default request vectors are fine:\n{}",
        diags.render()
    );
}

#[test]
fn grants_outside_client_ram() {
    let fx = Fixture::new();
    let src = with_two(&device(
        "d",
        "{ base = 0xD000_0000, size = 0x1000 }",
        "grants = [{ base = 0x1000, size = 0x1000 }, { base = 0xFFF000, size = 0x2000 }]\n",
    ));
    let diags = fx.errors(&src);
    expect(
        &diags,
        "grant 0xfff000..0x1001000 lies outside the client's RAM",
        13,
        45,
    );
    assert_eq!(diags.len(), 1, "{}", diags.render());
}

#[test]
fn vector_ranges() {
    let fx = Fixture::new();
    let src = with_two(
        &[
            device("a", "{ base = 0xD000_0000, size = 0x1000 }", "irq = 36\n"),
            device(
                "b",
                "{ base = 0xD000_1000, size = 0x1000 }",
                "irq = 20\nrequest_vector = 300\n",
            ),
        ]
        .concat(),
    );
    let diags = fx.errors(&src);
    expect(&diags, "`irq` = 36 is reserved for the UART", 13, 7);
    expect(&diags, "`irq` = 20 is a CPU exception vector", 19, 7);
    expect(
        &diags,
        "`request_vector` = 300 is not an interrupt vector",
        20,
        18,
    );
}

#[test]
fn vector_conflicts_in_one_partition() {
    let fx = Fixture::new();
    // control: channel c1's default 48 and device a's irq 48; c2's default 48 clashes too.
    // model: device a's request vector 40 and device m's irq 40.
    let src = with_two(
        &[
            "[[channel]]\nname = \"c1\"\nendpoints = [\"control\", \"model\"]\n",
            "[[channel]]\nname = \"c2\"\nendpoints = [\"model\", \"control\"]\n",
            &device(
                "a",
                "{ base = 0xD000_0000, size = 0x1000 }",
                "irq = 48\nrequest_vector = 40\n",
            ),
            "[[device]]\nname = \"m\"\npartition = \"model\"\nserved_by = \"control\"\n",
            "mmio = { base = 0xD000_0000, size = 0x1000 }\nirq = 40\nrequest_vector = 41\n",
        ]
        .concat(),
    );
    let diags = fx.errors(&src);
    let conflicts: Vec<_> = diags
        .iter()
        .filter(|d| d.message.starts_with("vector "))
        .collect();
    assert_eq!(conflicts.len(), 4, "{}", diags.render());
    expect(
        &diags,
        "vector 48 is used twice in partition `control`",
        12,
        8,
    );
    expect(
        &diags,
        "vector 48 is used twice in partition `model`",
        12,
        8,
    );
    let irq48 = diags
        .iter()
        .find(|d| d.line == 19 && d.message == "vector 48 is used twice in partition `control`")
        .expect("device irq clash");
    assert_eq!(irq48.column, 7);
    assert!(
        irq48.related[0]
            .1
            .contains("doorbell of channel `c1` (default vector)")
    );
    let m40 = diags
        .iter()
        .find(|d| d.message == "vector 40 is used twice in partition `model`")
        .unwrap();
    assert_eq!((m40.line, m40.column), (26, 7));
    assert!(m40.related[0].1.contains("request vector of device `a`"));
}

#[test]
fn schedule_problems() {
    let fx = Fixture::new();
    let src = with_two(
        "[schedule]\nmajor_frame_us = 1000\n\
         [[schedule.window]]\npartition = \"control\"\nstart_us = 0\nduration_us = 400\n\
         [[schedule.window]]\npartition = \"control\"\nstart_us = 300\nduration_us = 200\n\
         [[schedule.window]]\npartition = \"model\"\nstart_us = 500\nduration_us = 0\n\
         [[schedule.window]]\npartition = \"model\"\nstart_us = 900\nduration_us = 200\n",
    );
    let diags = fx.errors(&src);
    expect(
        &diags,
        "schedule windows of partition `control` overlap",
        16,
        12,
    );
    expect(&diags, "schedule window has zero duration", 21, 15);
    let i = expect(
        &diags,
        "schedule window ends at 1100 µs, after the major frame",
        25,
        15,
    );
    assert_eq!(
        diags.iter().nth(i).unwrap().related[0].1,
        "the major frame is 1000 µs"
    );
    let diags = fx.errors(&with_two("[schedule]\nmajor_frame_us = 0\n"));
    expect(&diags, "`major_frame_us` must not be zero", 9, 18);
    expect(&diags, "the schedule has no windows", 8, 1);
}

#[test]
fn unscheduled_partition_is_a_warning() {
    let fx = Fixture::new();
    let src = with_two(
        "[schedule]\nmajor_frame_us = 1000\n[[schedule.window]]\npartition = \"control\"\nstart_us = 0\nduration_us = 1000\n",
    );
    let warnings = fx.warnings(&src);
    expect(
        &warnings,
        "partition `model` has no schedule window; it never runs",
        6,
        8,
    );
    assert_eq!(warnings.len(), 1);
}

#[test]
fn cpus_beyond_host_are_a_warning_and_empty_cpus_an_error() {
    let fx = Fixture::new();
    let warnings =
        fx.warnings("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\ncpus = [3, 4]\n");
    let i = expect(
        &warnings,
        "host CPU 4 does not exist on this machine",
        4,
        12,
    );
    assert_eq!(
        warnings.iter().nth(i).unwrap().label,
        "this host has 4 CPUs (0..=3)"
    );
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\ncpus = []\n");
    expect(&diags, "`cpus` is empty", 4, 8);
}

#[test]
fn no_partitions() {
    let fx = Fixture::new();
    let diags = fx.errors("# nothing here\n");
    expect(&diags, "the system has no partitions", 1, 1);
}

#[test]
fn nothing_autostarts_is_a_warning() {
    let fx = Fixture::new();
    let warnings =
        fx.warnings("[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\nautostart = false\n");
    expect(&warnings, "no partition starts automatically", 2, 8);
}

/// `count` channels between `control` and `model` (5 lines each, from line 8), each with
/// its own vector.
fn channels(count: usize, size: &str) -> String {
    (0..count)
        .map(|i| format!("[[channel]]\nname = \"c{i}\"\nendpoints = [\"control\", \"model\"]\nsize = \"{size}\"\nvector = {}\n", 50 + i))
        .collect()
}

#[test]
fn eight_largest_channels_fit_in_the_ipc_area() {
    let fx = Fixture::new();
    let sys = fx
        .parse(&with_two(&channels(
            layout::MAX_CHANNELS_PER_PARTITION,
            "16M",
        )))
        .unwrap_or_else(|e| panic!("{e}"));
    let windows = sys.ipc_windows("control");
    assert_eq!(windows.len(), 8);
    let (_, last, size) = windows[7];
    assert!(layout::ipc_fits(last, size), "{last:#x} + {size:#x}");
}

#[test]
fn too_many_channels_for_the_boot_info() {
    let fx = Fixture::new();
    let diags = fx.errors(&with_two(&channels(10, "64K")));
    // Channel c8 (lines 48..=52) is the 9th of both partitions; c9 (53..=57) the 10th.
    let i = expect(
        &diags,
        "partition `control` has more than 8 IPC channels",
        50,
        14,
    );
    let d = diags.iter().nth(i).unwrap();
    assert_eq!(d.label, "channel `c8` is channel number 9 of `control`");
    assert_eq!(d.related[0].1, "this partition");
    assert!(
        d.notes[0].contains("at most 8 channels (HV_MAX_IPC)"),
        "{:?}",
        d.notes
    );
    expect(
        &diags,
        "partition `model` has more than 8 IPC channels",
        50,
        25,
    );
    assert!(
        diags
            .iter()
            .any(|d| d.line == 55 && d.label.contains("`c9` is channel number 10"))
    );
    assert_eq!(diags.len(), 4, "{}", diags.render());
}

#[test]
fn too_many_devices_for_the_boot_info() {
    let fx = Fixture::new();
    // Devices 0..=4 (6 lines each, from line 8): client `model`, served by `control`;
    // devices 5..=8: client `control`, served by `model`. Each partition has 9 devices, and
    // its 9th in boot-info order (clients first, then served) is the last one it serves.
    let src: String = (0..9)
        .map(|i| {
            let (client, model) = if i < 5 { ("model", "control") } else { ("control", "model") };
            format!(
                "[[device]]\nname = \"d{i}\"\npartition = \"{client}\"\nserved_by = \"{model}\"\nmmio = {{ base = {:#x}, size = 0x1000 }}\nrequest_vector = {}\n",
                0xD000_0000u64 + i * 0x1000,
                if i < 5 { 40 } else { 41 },
            )
        })
        .collect();
    let diags = fx.errors(&with_two(&src));
    // d4 is on lines 32..=37, d8 on lines 56..=61.
    let i = expect(
        &diags,
        "partition `control` has more than 8 devices",
        35,
        13,
    );
    let d = diags.iter().nth(i).unwrap();
    assert_eq!(
        d.label,
        "device `d4` is device number 9 of `control` (serving it)"
    );
    assert!(
        d.notes[0].contains("at most 8 devices (HV_MAX_DEVICES)"),
        "{:?}",
        d.notes
    );
    let i = expect(&diags, "partition `model` has more than 8 devices", 59, 13);
    assert_eq!(
        diags.iter().nth(i).unwrap().label,
        "device `d8` is device number 9 of `model` (serving it)"
    );
    assert_eq!(diags.len(), 2, "{}", diags.render());

    // Eight devices of one client are fine.
    let src: String = (0..8)
        .map(|i| {
            device(
                &format!("d{i}"),
                &format!(
                    "{{ base = {:#x}, size = 0x1000 }}",
                    0xD000_0000u64 + i * 0x1000
                ),
                "",
            )
        })
        .collect();
    fx.parse(&with_two(&src)).unwrap_or_else(|e| panic!("{e}"));
    let src: String = (0..9)
        .map(|i| {
            device(
                &format!("d{i}"),
                &format!(
                    "{{ base = {:#x}, size = 0x1000 }}",
                    0xD000_0000u64 + i * 0x1000
                ),
                "",
            )
        })
        .collect();
    let diags = fx.errors(&with_two(&src));
    // The 9th device (lines 48..=52) is one too many for its client and for its model.
    let i = expect(
        &diags,
        "partition `control` has more than 8 devices",
        50,
        13,
    );
    assert_eq!(
        diags.iter().nth(i).unwrap().label,
        "device `d8` is device number 9 of `control` (its client)"
    );
    expect(&diags, "partition `model` has more than 8 devices", 51, 13);
    assert_eq!(diags.len(), 2, "{}", diags.render());
}

#[test]
fn agent_settings() {
    let fx = Fixture::new();
    let part = "[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n";
    let sys = fx
        .parse(&format!("[agent]\nlink = \"tcp:127.0.0.1:4000\"\ntoken_file = \"token\"\ngdb_base_port = 5000\nresume_on_detach = false\n{part}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sys.agent.link.as_deref(), Some("tcp:127.0.0.1:4000"));
    assert_eq!(sys.agent.token_file, Some(fx.dir().join("token")));
    assert_eq!(sys.agent.gdb_base_port, 5000);
    assert!(!sys.agent.resume_on_detach);
    assert!(
        fx.parse(&format!("[agent]\nlink = \"pty\"\n{part}"))
            .is_ok()
    );

    let diags = fx.errors(&format!(
        "[agent]\nlink = \"tcp:10.0.0.1:4000\"\ngdb_base_port = 70000\n{part}"
    ));
    expect(&diags, "TCP link must listen on a loopback address", 2, 8);
    expect(&diags, "GDB port 70000 is out of range", 3, 17);
    let diags = fx.errors(&format!("[agent]\nlink = \"serial:/dev/ttyS0\"\n{part}"));
    expect(&diags, "unknown link `serial:/dev/ttyS0`", 2, 8);
    let diags = fx.errors(&format!("[agent]\nlink = \"tcp:localhost:4000\"\n{part}"));
    expect(&diags, "invalid TCP address `localhost:4000`", 2, 8);
    let diags = fx.errors(&format!("[agent]\nlink = \"unix:\"\n{part}"));
    expect(&diags, "`unix:` link has no socket path", 2, 8);
    let warnings = fx.warnings(&format!(
        "[agent]\nlink = \"unix:/tmp/x.sock\"\ntoken_file = \"t\"\ngdb_base_port = 80\n{part}"
    ));
    expect(
        &warnings,
        "`token_file` is only used with a `tcp:` link",
        3,
        14,
    );
    expect(&warnings, "GDB port 80 is a privileged port", 4, 17);
}

#[test]
fn the_whole_gdb_port_plan_must_fit() {
    let fx = Fixture::new();
    let part = |name: &str, vcpus: u32| {
        format!("[[partition]]\nname = \"{name}\"\nimage = \"guest.elf\"\nvcpus = {vcpus}\n")
    };
    let two = format!("{}{}", part("a", 1), part("b", 2));
    // a: 1 vCPU, b: 2 vCPUs -> top port BASE+100+16+1 = BASE+117.
    assert_eq!(gdb_port_plan_top(3333, &[1, 2]), 3333 + 117);
    assert_eq!(gdb_port_plan_top(1, &[]), 1);
    assert_eq!(gdb_port_plan_top(65535, &[16]), 65535 + 115);
    for base in [65535, 65419, 65500] {
        let diags = fx.errors(&format!("[agent]\ngdb_base_port = {base}\n{two}"));
        let top = base + 117;
        let i = expect(
            &diags,
            &format!("GDB port plan does not fit: it needs ports {base}..={top}"),
            2,
            17,
        );
        let d = diags.iter().nth(i).unwrap();
        assert_eq!(d.label, "2 partitions need 117 ports above the base");
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("base port of at most 65418")),
            "{}",
            diags.render()
        );
        assert_eq!(diags.error_count(), 1, "{}", diags.render());
    }
    // The highest base that fits is fine; so is the default.
    assert!(
        fx.parse(&format!("[agent]\ngdb_base_port = 65418\n{two}"))
            .is_ok()
    );
    assert!(fx.parse(&two).is_ok());
    // One partition alone on the last port still needs its vCPU port.
    let diags = fx.errors(&format!("[agent]\ngdb_base_port = 65535\n{}", part("a", 1)));
    expect(
        &diags,
        "GDB port plan does not fit: it needs ports 65535..=65635",
        2,
        17,
    );
}

#[test]
fn token_file_empty() {
    let fx = Fixture::new();
    let diags = fx.errors(
        "[agent]\nlink = \"tcp:127.0.0.1:4000\"\ntoken_file = \"\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
    );
    expect(&diags, "`token_file` is empty", 3, 14);
    assert_eq!(diags.error_count(), 1, "{}", diags.render());
}

#[test]
fn unix_socket_path_too_long() {
    let fx = Fixture::new();
    let path = format!("/tmp/{}", "s".repeat(MAX_UNIX_PATH - 4));
    let diags = fx.errors(&format!(
        "[agent]\nlink = \"unix:{path}\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n"
    ));
    let i = expect(&diags, "unix socket path is too long", 2, 8);
    let d = diags.iter().nth(i).unwrap();
    assert_eq!(d.label, "108 bytes");
    assert_eq!(d.notes, ["socket paths are limited to 107 bytes"]);
    // One byte shorter is the longest path that fits.
    fx.parse(&format!(
        "[agent]\nlink = \"unix:{}\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
        &path[..MAX_UNIX_PATH]
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn tcp_port_zero() {
    let fx = Fixture::new();
    let diags = fx.errors(
        "[agent]\nlink = \"tcp:127.0.0.1:0\"\n[[partition]]\nname = \"a\"\nimage = \"guest.elf\"\n",
    );
    expect(&diags, "TCP link port must not be 0", 2, 8);
    assert_eq!(diags.len(), 1, "{}", diags.render());
}

#[test]
fn image_empty() {
    let fx = Fixture::new();
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"\"\n");
    let i = expect(&diags, "`image` is empty", 3, 9);
    assert_eq!(
        diags.iter().nth(i).unwrap().label,
        "expected a path to an ELF file"
    );
    assert_eq!(
        diags.len(),
        1,
        "not also an image-file error:\n{}",
        diags.render()
    );
}

#[test]
fn timeout_ms_zero() {
    let fx = Fixture::new();
    let src = with_two(&device(
        "d",
        "{ base = 0xD000_0000, size = 0x1000 }",
        "timeout_ms = 0\n",
    ));
    let diags = fx.errors(&src);
    let i = expect(&diags, "`timeout_ms` must be at least 1", 13, 14);
    assert_eq!(
        diags.iter().nth(i).unwrap().label,
        "a zero timeout fails every access"
    );
    assert_eq!(diags.len(), 1, "{}", diags.render());
}

#[test]
fn grant_size_zero() {
    let fx = Fixture::new();
    let src = with_two(&device(
        "d",
        "{ base = 0xD000_0000, size = 0x1000 }",
        "grants = [{ base = 0x1000, size = 0 }]\n",
    ));
    let diags = fx.errors(&src);
    let i = expect(&diags, "grant size must not be zero", 13, 35);
    assert_eq!(diags.iter().nth(i).unwrap().label, "empty grant");
    assert_eq!(diags.len(), 1, "{}", diags.render());
}

#[test]
fn image_file_too_large() {
    let fx = Fixture::new();
    // A sparse file: no disk space is used, and the size check comes before any read.
    let path = fx.dir().join("huge.elf");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(image::MAX_IMAGE_FILE + 1))
        .expect("sparse file");
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"huge.elf\"\n");
    expect(
        &diags,
        &format!(
            "image file is too large ({} bytes)",
            image::MAX_IMAGE_FILE + 1
        ),
        3,
        9,
    );
    assert_eq!(diags.len(), 1, "{}", diags.render());
}

#[test]
fn image_big_endian() {
    let mut elf = test_elf::executable_at(0x10_0000);
    elf[5] = 2; // e_ident[EI_DATA] = ELFDATA2MSB
    let diags = image_diags("be.elf", &elf, "");
    let i = expect(&diags, "image is a big-endian ELF file", 3, 9);
    assert!(
        diags.iter().nth(i).unwrap().notes[0].contains("ELF64 x86_64 executable"),
        "{}",
        diags.render()
    );
}

#[test]
fn image_unreadable() {
    let fx = Fixture::new();
    // A symlink loop cannot be read even by root.
    std::os::unix::fs::symlink("loop.elf", fx.dir().join("loop.elf")).expect("symlink");
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"loop.elf\"\n");
    let i = expect(&diags, "cannot read image", 3, 9);
    let notes = &diags.iter().nth(i).unwrap().notes;
    assert!(notes[0].contains("symbolic links"), "{notes:?}");

    // A file without read permission, where permissions apply (not to root).
    use std::os::unix::fs::PermissionsExt;
    let path = fx.dir().join("locked.elf");
    std::fs::write(&path, test_elf::executable_at(0x10_0000)).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    if std::fs::File::open(&path).is_ok() {
        eprintln!("image_unreadable: running with CAP_DAC_OVERRIDE, mode 0o000 part skipped");
        return;
    }
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"locked.elf\"\n");
    let i = expect(&diags, "cannot read image", 3, 9);
    let notes = &diags.iter().nth(i).unwrap().notes;
    assert!(notes[0].contains("Permission denied"), "{notes:?}");
}

/// One partition whose image is `name`, written with `bytes` (line 3 holds `image`).
fn image_diags(name: &str, bytes: &[u8], extra: &str) -> Diagnostics {
    let fx = Fixture::new();
    fx.write(name, bytes);
    fx.errors(&format!(
        "[[partition]]\nname = \"a\"\nimage = \"{name}\"\n{extra}"
    ))
}

#[test]
fn image_missing() {
    let fx = Fixture::new();
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \"../target/guests/nope.elf\"\n");
    let i = expect(&diags, "image does not exist", 3, 9);
    let notes = &diags.iter().nth(i).unwrap().notes;
    assert!(
        notes.last().unwrap().starts_with("resolved to /"),
        "{notes:?}"
    );
    let diags = fx.errors("[[partition]]\nname = \"a\"\nimage = \".\"\n");
    expect(&diags, "image is not a regular file", 3, 9);
}

#[test]
fn image_not_elf() {
    let diags = image_diags("guest.bin", b"\x55\x48\x89\xe5", "");
    expect(&diags, "image is not an ELF file", 3, 9);
}

#[test]
fn image_not_elf64_x86_64_executable() {
    let seg = [Seg {
        addr: 0x10_0000,
        memsz: 0x1000,
        filesz: 0x10,
    }];
    let diags = image_diags("a.elf", &test_elf::build(1, 3, 2, 0x10_0000, &seg), "");
    expect(&diags, "image is not a 64-bit ELF file", 3, 9);
    let diags = image_diags("a.elf", &test_elf::build(2, 183, 2, 0x10_0000, &seg), "");
    expect(
        &diags,
        "image is built for ELF machine 183, not x86_64",
        3,
        9,
    );
    let diags = image_diags("a.elf", &test_elf::build(2, 62, 3, 0x10_0000, &seg), "");
    expect(
        &diags,
        "image is position-independent (ET_DYN), not a fixed-address executable",
        3,
        9,
    );
    let diags = image_diags("a.elf", &test_elf::build(2, 62, 1, 0x10_0000, &seg), "");
    expect(&diags, "image is not an executable (ELF type 1)", 3, 9);
}

#[test]
fn image_segments_outside_the_image_area() {
    let low = test_elf::executable_at(0xF_0000);
    let diags = image_diags("low.elf", &low, "");
    expect(
        &diags,
        "image segment 0 at 0xf0000..0xf1000 lies outside the image area 0x100000..0xff0000",
        3,
        9,
    );
    // 2 MiB with 16 vCPUs leaves no room at all; 4 MiB with 2 vCPUs ends at 0x3e0000.
    let diags = image_diags(
        "a.elf",
        &test_elf::executable_at(0x10_0000),
        "memory = \"2M\"\nvcpus = 16\n",
    );
    expect(
        &diags,
        "image segment 0 at 0x100000..0x101000 lies outside the image area 0x100000..0x100000",
        3,
        9,
    );
    let big = test_elf::build(
        2,
        62,
        2,
        0x10_0000,
        &[Seg {
            addr: 0x10_0000,
            memsz: 0x30_0000,
            filesz: 0x10,
        }],
    );
    let diags = image_diags("big.elf", &big, "memory = \"4M\"\nvcpus = 2\n");
    expect(
        &diags,
        "image segment 0 at 0x100000..0x400000 lies outside the image area 0x100000..0x3e0000",
        3,
        9,
    );
}

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3\n"), Some(4));
    assert_eq!(parse_cpu_list("0,2,8-9"), Some(10));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list(""), None);
    assert_eq!(parse_cpu_list("x"), None);
    assert!(host_cpu_count() >= 1);
}

#[test]
fn human_sizes() {
    assert_eq!(human(16 << 20), "16M");
    assert_eq!(human(1 << 30), "1G");
    assert_eq!(human(4096), "4K");
    assert_eq!(human(4097), "4097 bytes");
}
