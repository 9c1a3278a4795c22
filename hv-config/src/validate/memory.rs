//! Partitions and their memory: RAM size, vCPUs, host CPUs, image paths, and what the
//! boot-info block can describe (channels and devices per partition).

use super::*;

impl Validator<'_> {
    pub(super) fn partitions<'r>(&mut self, raw: &'r [RawPartition]) -> Vec<Part<'r>> {
        self.duplicates("partition", raw.iter().map(|p| p.name.as_ref()));
        let host_cpus = self.options.host_cpus.unwrap_or_else(host_cpu_count);
        raw.iter()
            .map(|p| {
                if let Some(name) = &p.name {
                    self.check_name("partition", name);
                }
                let image = p.image.as_ref().map_or_else(PathBuf::new, |i| {
                    if i.get_ref().is_empty() {
                        self.error(i.span(), "`image` is empty").label("expected a path to an ELF file");
                    }
                    absolute(&self.base_dir.join(i.get_ref()))
                });
                let memory = match &p.memory {
                    None => Some(layout::DEFAULT_MEMORY),
                    Some(m) => self.memory(m),
                };
                let vcpus = match &p.vcpus {
                    None => Some(1),
                    Some(v) => match u32::try_from(*v.get_ref()) {
                        Ok(n @ 1..=layout::MAX_VCPUS) => Some(n),
                        _ => {
                            self.error(v.span(), format!("`vcpus` = {} is out of range", v.get_ref()))
                                .label(format!("expected 1..={}", layout::MAX_VCPUS));
                            None
                        }
                    },
                };
                let cpus = p.cpus.as_ref().map(|cpus| {
                    if cpus.get_ref().is_empty() {
                        self.error(cpus.span(), "`cpus` is empty")
                            .label("expected at least one host CPU")
                            .note("leave `cpus` out to let the vCPU threads float");
                    }
                    cpus.get_ref()
                        .iter()
                        .map(|c| {
                            let cpu = usize::try_from(*c.get_ref()).unwrap_or(usize::MAX);
                            if cpu >= host_cpus {
                                self.warning(c.span(), format!("host CPU {} does not exist on this machine", c.get_ref()))
                                    .label(format!("this host has {host_cpus} CPUs (0..={})", host_cpus.saturating_sub(1)))
                                    .note("pinning to it will fail here; it may exist on the target machine");
                            }
                            cpu
                        })
                        .collect()
                });
                Part {
                    raw: p,
                    name: p.name.as_ref(),
                    image,
                    memory,
                    vcpus,
                    cpus,
                    autostart: p.autostart.as_ref().is_none_or(|a| *a.get_ref()),
                }
            })
            .collect()
    }

    pub(super) fn memory(&mut self, m: &Spanned<u64>) -> Option<u64> {
        let bytes = *m.get_ref();
        if !bytes.is_multiple_of(PAGE_SIZE) {
            self.error(
                m.span(),
                format!("`memory` ({bytes} bytes) is not a multiple of 4 KiB"),
            )
            .label("not page aligned");
            None
        } else if !(layout::MIN_MEMORY..=layout::MAX_MEMORY).contains(&bytes) {
            self.error(
                m.span(),
                format!("`memory` ({}) is out of range", human(bytes)),
            )
            .label("expected 2M..=1G");
            None
        } else {
            Some(bytes)
        }
    }

    /// Channels and devices a partition has beyond what its boot-info block can list: the guest
    /// would never see them. Devices count in hv-core's boot-info order: those the partition is
    /// the client of, then those it serves, each in declaration order.
    pub(super) fn boot_info_limits(
        &mut self,
        parts: &[Part<'_>],
        channels: &[Chan<'_>],
        devices: &[Dev<'_>],
    ) {
        const MAX_CHANNELS: usize = layout::MAX_CHANNELS_PER_PARTITION;
        const MAX_DEVICES: usize = layout::MAX_DEVICES_PER_PARTITION;
        for (p, part) in parts.iter().enumerate() {
            let mine = channels.iter().filter_map(|c| {
                let end = c.ends?.iter().position(|&e| e == p)?;
                let list = c.raw.endpoints.as_ref()?.get_ref();
                Some((c, list.get(end)?.span()))
            });
            for (number, (c, span)) in mine.enumerate().skip(MAX_CHANNELS) {
                self.error(
                    span,
                    format!(
                        "partition `{}` has more than {MAX_CHANNELS} IPC channels",
                        part.label()
                    ),
                )
                .label(format!("channel `{}` is channel number {} of `{}`", c.name, number + 1, part.label()))
                .related(part.anchor(), "this partition")
                .note(format!(
                    "a partition's boot info lists at most {MAX_CHANNELS} channels (HV_MAX_IPC); the guest could not find this one"
                ));
            }

            let as_client = devices
                .iter()
                .filter(|d| d.client == Some(p))
                .filter_map(|d| Some((d, d.raw.partition.as_ref()?.span(), "its client")));
            let as_model = devices
                .iter()
                .filter(|d| d.model == Some(p))
                .filter_map(|d| Some((d, d.raw.served_by.as_ref()?.span(), "serving it")));
            for (number, (d, span, role)) in as_client.chain(as_model).enumerate().skip(MAX_DEVICES)
            {
                self.error(
                    span,
                    format!(
                        "partition `{}` has more than {MAX_DEVICES} devices",
                        part.label()
                    ),
                )
                .label(format!("device `{}` is device number {} of `{}` ({role})", d.name, number + 1, part.label()))
                .related(part.anchor(), "this partition")
                .note(format!(
                    "a partition's boot info lists at most {MAX_DEVICES} devices (HV_MAX_DEVICES), counting the devices it is the client of first, then those it serves; the guest could not find this one"
                ));
            }
        }
    }
}
