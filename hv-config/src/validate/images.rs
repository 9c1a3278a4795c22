//! Guest image files: each partition's ELF read and its segments checked against the
//! partition's image window.

use super::*;

/// Checks every partition's image file (existence, ELF64 x86_64 executable, segment placement).
pub(crate) fn check_images(raw: &RawDocument, config: &SystemConfig, diags: &mut Diagnostics) {
    for (p, part) in raw.partitions.iter().zip(&config.partitions) {
        let Some(written) = p.image.as_ref().filter(|i| !i.get_ref().is_empty()) else {
            continue;
        };
        let layout_window = valid_window(p, part);
        let problems = match image::read_image(&part.image) {
            Err(e) => vec![e],
            Ok(info) => match layout_window {
                Some((low, high)) => image::check_layout(&info, low, high),
                None => Vec::new(),
            },
        };
        for problem in problems {
            let mut d = Diagnostic::error(written.span(), problem.to_string())
                .with_label(format!("image of partition `{}`", part.name));
            if let image::ImageError::Read(io) = &problem {
                d = d.with_note(io.to_string());
            }
            if let image::ImageError::SegmentOutside { .. } = &problem {
                d = d.with_note(format!(
                    "partition `{}` has {} of RAM and {} vCPU stack(s) of 64 KiB at the top",
                    part.name,
                    human(part.memory),
                    part.vcpus
                ));
            }
            diags.push(
                d.with_optional_note(problem.hint().map(str::to_owned))
                    .with_note(format!("resolved to {}", part.image.display())),
            );
        }
    }
}

/// The image window of a partition, if its `memory` and `vcpus` were valid.
fn valid_window(raw: &RawPartition, part: &PartitionConfig) -> Option<(u64, u64)> {
    let memory_ok = raw.memory.as_ref().is_none_or(|m| {
        let m = *m.get_ref();
        m.is_multiple_of(PAGE_SIZE) && (layout::MIN_MEMORY..=layout::MAX_MEMORY).contains(&m)
    });
    let vcpus_ok = raw
        .vcpus
        .as_ref()
        .is_none_or(|v| (1..=u64::from(layout::MAX_VCPUS)).contains(v.get_ref()));
    if !(memory_ok && vcpus_ok) {
        return None;
    }
    Some(
        layout::image_window(part.memory, part.vcpus)
            .unwrap_or((layout::IMAGE_BASE, layout::IMAGE_BASE)),
    )
}
