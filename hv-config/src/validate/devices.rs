//! Devices: client and model partitions, MMIO ranges and their overlaps, grants, and
//! interrupt vectors used twice in one partition (devices, channels, the UART).

use super::*;

impl Validator<'_> {
    pub(super) fn devices<'r>(
        &mut self,
        raw: &'r [RawDevice],
        parts: &[Part<'_>],
        lookup: &Lookup<'_>,
    ) -> Vec<Dev<'r>> {
        self.duplicates("device", raw.iter().map(|d| d.name.as_ref()));
        raw.iter()
            .map(|d| {
                if let Some(name) = &d.name {
                    self.check_name("device", name);
                }
                let client = d.partition.as_ref().and_then(|p| self.resolve(lookup, p, "`partition`"));
                let model = d.served_by.as_ref().and_then(|s| {
                    let model = self.resolve(lookup, s, "`served_by`")?;
                    if Some(model) == client {
                        self.error(s.span(), format!("device is served by its own client `{}`", s.get_ref()))
                            .label("same partition as `partition`")
                            .note("a device model must run in a different partition than the device's client");
                        return None;
                    }
                    Some(model)
                });
                if d.served_by.is_none() {
                    let name = d.name.as_ref().map_or("", |n| n.get_ref().as_str());
                    if !BUILTIN_DEVICES.contains(&name) {
                        let span = d.name.as_ref().map_or(d.span.clone(), Spanned::span);
                        self.error(span, format!("device `{name}` has no `served_by` and is not a built-in device"))
                            .label("no model serves this device")
                            .note("set `served_by` to the device-model partition that implements it (there are no built-in devices yet)");
                    }
                }
                let client_memory = client.and_then(|c| parts[c].memory);
                let mmio = d.mmio.as_ref().and_then(|m| self.mmio(m, client_memory));
                let irq = d.irq.as_ref().and_then(|v| self.vector(v, "irq"));
                let request_vector = match &d.request_vector {
                    None => Some(layout::DEFAULT_REQUEST_VECTOR),
                    Some(v) => self.vector(v, "request_vector"),
                };
                let timeout_ms = match &d.timeout_ms {
                    None => layout::DEFAULT_TIMEOUT_MS,
                    Some(t) => {
                        if *t.get_ref() == 0 {
                            self.error(t.span(), "`timeout_ms` must be at least 1")
                                .label("a zero timeout fails every access");
                        }
                        *t.get_ref()
                    }
                };
                let grants = d
                    .grants
                    .as_ref()
                    .map(|g| {
                        g.get_ref()
                            .iter()
                            .map(|grant| {
                                self.grant(grant, client_memory);
                                MemoryRange {
                                    base: *grant.get_ref().base.get_ref(),
                                    size: *grant.get_ref().size.get_ref(),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Dev {
                    raw: d,
                    name: d.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_default(),
                    client,
                    model,
                    mmio,
                    irq,
                    request_vector,
                    timeout_ms,
                    grants,
                }
            })
            .collect()
    }

    /// Checks one MMIO range against alignment, RAM, the IPC area and the 4 GiB identity map.
    pub(super) fn mmio(
        &mut self,
        m: &Spanned<RawRange>,
        memory: Option<u64>,
    ) -> Option<(u64, u64)> {
        let RawRange { base, size } = m.get_ref();
        let (b, s) = (*base.get_ref(), *size.get_ref());
        let mut ok = true;
        if !b.is_multiple_of(PAGE_SIZE) {
            self.error(
                base.span(),
                format!("MMIO base {b:#x} is not 4 KiB aligned"),
            )
            .label("not page aligned");
            ok = false;
        }
        if s == 0 || !s.is_multiple_of(PAGE_SIZE) {
            self.error(
                size.span(),
                format!("MMIO size {s:#x} is not a non-zero multiple of 4 KiB"),
            )
            .label("expected a multiple of 0x1000");
            ok = false;
        }
        let end = b.checked_add(s).filter(|&e| e <= layout::IDENTITY_MAPPED);
        let Some(end) = end else {
            self.error(m.span(), format!("MMIO range at {b:#x} extends beyond 4 GiB"))
                .label(format!("ends at {:#x}", u128::from(b) + u128::from(s)))
                .note("the boot page tables identity-map only 0..4 GiB; MMIO must end at or below 0x1_0000_0000");
            return None;
        };
        if let Some(memory) = memory.filter(|&mem| b < mem) {
            self.error(
                m.span(),
                format!("MMIO range {b:#x}..{end:#x} overlaps the partition's RAM"),
            )
            .label(format!("RAM is 0x0..{memory:#x}"))
            .note("MMIO ranges must lie above RAM, in [memory, 4 GiB)");
            ok = false;
        }
        if b < layout::IPC_END && end > layout::IPC_BASE {
            self.error(m.span(), format!("MMIO range {b:#x}..{end:#x} overlaps the IPC area"))
                .label(format!("IPC area is {:#x}..{:#x}", layout::IPC_BASE, layout::IPC_END))
                .note("channel windows are mapped there; move the device below 0x8000_0000 or to 0x9000_0000 or above");
            ok = false;
        }
        ok.then_some((b, s))
    }

    pub(super) fn grant(&mut self, grant: &Spanned<RawRange>, memory: Option<u64>) {
        let RawRange { base, size } = grant.get_ref();
        let (b, s) = (*base.get_ref(), *size.get_ref());
        if s == 0 {
            self.error(size.span(), "grant size must not be zero")
                .label("empty grant");
            return;
        }
        let Some(memory) = memory else { return };
        if b.checked_add(s).is_none_or(|end| end > memory) {
            self.error(
                grant.span(),
                format!(
                    "grant {b:#x}..{:#x} lies outside the client's RAM",
                    u128::from(b) + u128::from(s)
                ),
            )
            .label(format!("RAM is 0x0..{memory:#x}"))
            .note("grants are windows of the client's RAM the device model may copy to and from");
        }
    }

    /// Devices of one client whose MMIO ranges overlap.
    pub(super) fn mmio_overlaps(&mut self, devices: &[Dev<'_>]) {
        for (i, d) in devices.iter().enumerate() {
            let (Some(client), Some((base, size))) = (d.client, d.mmio) else {
                continue;
            };
            let earlier = devices[..i].iter().find(|e| {
                e.client == Some(client)
                    && e.mmio
                        .is_some_and(|(eb, es)| base < eb + es && eb < base + size)
            });
            if let Some(e) = earlier {
                let span = d
                    .raw
                    .mmio
                    .as_ref()
                    .map_or_else(|| d.anchor(), Spanned::span);
                let other = e
                    .raw
                    .mmio
                    .as_ref()
                    .map_or_else(|| e.anchor(), Spanned::span);
                self.error(
                    span,
                    format!(
                        "MMIO range of device `{}` overlaps device `{}`",
                        d.name, e.name
                    ),
                )
                .label(format!("{base:#x}..{:#x}", base + size))
                .related(other, format!("`{}` is mapped here", e.name))
                .note("devices of one partition must not share MMIO addresses");
            }
        }
    }

    /// Two sources using one vector in one partition (request vectors of devices served by the
    /// same model may share: the model has one request queue).
    pub(super) fn vector_conflicts(
        &mut self,
        parts: &[Part<'_>],
        channels: &[Chan<'_>],
        devices: &[Dev<'_>],
    ) {
        let mut uses: Vec<Vec<VectorUse>> = parts.iter().map(|_| Vec::new()).collect();
        for c in channels {
            let (Some(ends), Some(vector)) = (c.ends, c.vector) else {
                continue;
            };
            let span = c
                .raw
                .vector
                .as_ref()
                .map_or_else(|| c.anchor(), Spanned::span);
            let default = if c.raw.vector.is_none() {
                " (default vector)"
            } else {
                ""
            };
            for p in ends {
                uses[p].push(VectorUse {
                    vector,
                    span: span.clone(),
                    what: format!("doorbell of channel `{}`{default}", c.name),
                    is_request: false,
                });
            }
        }
        for d in devices {
            if let (Some(client), Some(irq), Some(raw)) = (d.client, d.irq, &d.raw.irq) {
                uses[client].push(VectorUse {
                    vector: irq,
                    span: raw.span(),
                    what: format!("interrupt of device `{}`", d.name),
                    is_request: false,
                });
            }
            if let (Some(model), Some(vector)) = (d.model, d.request_vector) {
                let default = if d.raw.request_vector.is_none() {
                    " (default vector)"
                } else {
                    ""
                };
                uses[model].push(VectorUse {
                    vector,
                    span: d
                        .raw
                        .request_vector
                        .as_ref()
                        .map_or_else(|| d.anchor(), Spanned::span),
                    what: format!("request vector of device `{}`{default}", d.name),
                    is_request: true,
                });
            }
        }
        for (p, list) in uses.iter().enumerate() {
            for (i, u) in list.iter().enumerate() {
                let clash = list[..i]
                    .iter()
                    .find(|e| e.vector == u.vector && !(e.is_request && u.is_request));
                if let Some(e) = clash {
                    self.error(
                        u.span.clone(),
                        format!(
                            "vector {} is used twice in partition `{}`",
                            u.vector,
                            parts[p].label()
                        ),
                    )
                    .label(u.what.clone())
                    .related(e.span.clone(), format!("also used by the {}", e.what))
                    .note("each interrupt source of a partition needs its own vector");
                }
            }
        }
    }
}
