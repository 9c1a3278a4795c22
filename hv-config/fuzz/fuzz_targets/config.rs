//! Fuzz target: system descriptions through hv-config's parser and validation (image files
//! not read). Inputs starting with a byte below 8 build a description from a base port,
//! partitions and vCPU counts, followed by raw text; any other input is the text itself (so
//! the `.toml` files of `hv-config/tests/corpus` seed it as they are). Checks: no
//! panic, every diagnostic has a position and renders; and what `gdb_base_port = 65535` once
//! got past: a description that validates has a gdb port plan (partition k on BASE+k, its
//! vCPU j on BASE+100+16k+j) that fits below 65536, and a well-formed one whose plan does not
//! fit is an error that says so.
#![no_main]

use std::path::Path;

use hv_config::{ConfigError, ParseOptions, SystemConfig, gdb_port_plan_top};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (source, plan) = if input.first().is_none_or(|&b| b >= 8) || input.len() < 4 {
        (String::from_utf8_lossy(input).into_owned(), None)
    } else {
        let rest = &input[1..];
        let base = u16::from_le_bytes([rest[0], rest[1]]);
        let n = usize::from(rest[2] % 8) + 1;
        let counts = &rest[3..];
        let vcpus: Vec<u32> = (0..n)
            .map(|k| u32::from(counts.get(k).copied().unwrap_or(1) % 18))
            .collect();
        let extra = String::from_utf8_lossy(counts.get(n..).unwrap_or_default());
        let mut s = format!("[agent]\ngdb_base_port = {base}\n");
        for (k, v) in vcpus.iter().enumerate() {
            s.push_str(&format!(
                "[[partition]]\nname = \"p{k}\"\nimage = \"p{k}.elf\"\nvcpus = {v}\n"
            ));
        }
        let clean = extra.is_empty() && base >= 1 && vcpus.iter().all(|v| (1..=16).contains(v));
        s.push_str(&extra);
        (s, Some((base, vcpus, clean)))
    };
    let options = ParseOptions {
        host_cpus: Some(64),
        check_images: false,
    };
    let result = SystemConfig::parse_with(&source, Path::new("/fuzz/system.toml"), &options);
    match &result {
        Ok(config) => {
            let vcpus: Vec<u32> = config.partitions.iter().map(|p| p.vcpus).collect();
            let top = gdb_port_plan_top(config.agent.gdb_base_port, &vcpus);
            assert!(
                top <= 65535 || (config.agent.gdb_base_port == 3333 && vcpus.len() > 3000),
                "a description whose gdb port plan reaches {top} validated"
            );
        }
        Err(ConfigError::Invalid(diags)) => {
            for d in diags.iter() {
                assert!(d.line >= 1 && d.column >= 1, "{d:?}");
            }
            let _ = diags.render();
        }
        Err(_) => {}
    }
    if let Some((base, vcpus, true)) = plan {
        let top = gdb_port_plan_top(base, &vcpus);
        match &result {
            Ok(_) => assert!(top <= 65535),
            Err(ConfigError::Invalid(diags)) => assert!(
                top > 65535
                    && diags
                        .iter()
                        .any(|d| d.message.starts_with("GDB port plan does not fit")),
                "{}",
                diags.render()
            ),
            Err(e) => panic!("{e}"),
        }
    }
});
