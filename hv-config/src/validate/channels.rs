//! IPC channels: names, endpoints, window sizes and doorbell vectors, and whether a
//! partition's windows fit in the IPC area.

use super::*;

impl Validator<'_> {
    pub(super) fn channels<'r>(
        &mut self,
        raw: &'r [RawChannel],
        lookup: &Lookup<'_>,
    ) -> Vec<Chan<'r>> {
        self.duplicates("channel", raw.iter().map(|c| c.name.as_ref()));
        raw.iter()
            .map(|c| {
                if let Some(name) = &c.name {
                    self.check_name("channel", name);
                }
                let mut endpoint_names = [String::new(), String::new()];
                let mut ends = None;
                if let Some(endpoints) = &c.endpoints {
                    let list = endpoints.get_ref();
                    let resolved: Vec<Option<usize>> = list
                        .iter()
                        .map(|e| self.resolve(lookup, e, "endpoint"))
                        .collect();
                    if list.len() != 2 {
                        self.error(
                            endpoints.span(),
                            format!("a channel has exactly two endpoints, not {}", list.len()),
                        )
                        .label("expected [\"<partition>\", \"<partition>\"]");
                    } else if list[0].get_ref() == list[1].get_ref() {
                        self.error(
                            list[1].span(),
                            format!(
                                "channel connects partition `{}` to itself",
                                list[0].get_ref()
                            ),
                        )
                        .label("same as the first endpoint")
                        .related(list[0].span(), "first endpoint")
                        .note("the two endpoints must be different partitions");
                    } else if let [Some(a), Some(b)] = resolved[..] {
                        ends = Some([a, b]);
                    }
                    for (slot, e) in endpoint_names.iter_mut().zip(list) {
                        slot.clone_from(e.get_ref());
                    }
                }
                let size = match &c.size {
                    None => layout::DEFAULT_CHANNEL_SIZE,
                    Some(s) => {
                        let bytes = *s.get_ref();
                        if !bytes.is_multiple_of(PAGE_SIZE) {
                            self.error(
                                s.span(),
                                format!(
                                    "channel `size` ({bytes} bytes) is not a multiple of 4 KiB"
                                ),
                            )
                            .label("not page aligned");
                        } else if !(layout::MIN_CHANNEL_SIZE..=layout::MAX_CHANNEL_SIZE)
                            .contains(&bytes)
                        {
                            self.error(
                                s.span(),
                                format!("channel `size` ({}) is out of range", human(bytes)),
                            )
                            .label("expected 4K..=16M");
                        }
                        bytes
                    }
                };
                let vector = match &c.vector {
                    None => Some(layout::DEFAULT_CHANNEL_VECTOR),
                    Some(v) => self.vector(v, "vector"),
                };
                Chan {
                    raw: c,
                    name: c
                        .name
                        .as_ref()
                        .map(|n| n.get_ref().clone())
                        .unwrap_or_default(),
                    ends,
                    endpoint_names,
                    size,
                    vector,
                }
            })
            .collect()
    }
}
