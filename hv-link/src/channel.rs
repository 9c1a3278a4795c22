//! Channel ids (numbers in frame headers) and channel names (what `channel.open` asks for).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest partition name accepted in a channel name.
pub const MAX_PARTITION_NAME: usize = 64;

/// A bad channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name has no known kind prefix.
    #[error(
        "unknown channel kind in {name:?} (expected control, trace, gdb:<partition>[.<vcpu>] or console:<partition>)"
    )]
    UnknownKind {
        /// The rejected name.
        name: String,
    },
    /// The partition part is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error(
        "bad partition name {partition:?} in channel {name:?}: use 1-64 characters from [A-Za-z0-9_-]"
    )]
    BadPartition {
        /// The rejected channel name.
        name: String,
        /// The partition part.
        partition: String,
    },
    /// The vCPU part is not a decimal number.
    #[error("bad vCPU index {vcpu:?} in channel {name:?}: expected a decimal number")]
    BadVcpu {
        /// The rejected channel name.
        name: String,
        /// The vCPU part.
        vcpu: String,
    },
    /// A vCPU was given where the channel kind has none.
    #[error("channel {name:?} does not take a vCPU index")]
    UnexpectedVcpu {
        /// The rejected channel name.
        name: String,
    },
}

/// Numeric channel id carried in every frame header. Channel 0 is `control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// The control channel (JSON-RPC), always open.
    pub const CONTROL: ChannelId = ChannelId(0);
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A channel name: `control`, `trace`, `gdb:<partition>`, `gdb:<partition>.<vcpu>`,
/// `console:<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelName {
    /// `control`: JSON-RPC 2.0, always channel 0 (never opened).
    Control,
    /// `gdb:<partition>` (whole partition) or `gdb:<partition>.<vcpu>` (one vCPU):
    /// raw GDB remote serial protocol bytes.
    Gdb {
        /// Partition name.
        partition: String,
        /// vCPU index, for a per-vCPU stub.
        vcpu: Option<u32>,
    },
    /// `console:<partition>`: the partition's UART, raw bytes both ways.
    Console {
        /// Partition name.
        partition: String,
    },
    /// `trace`: binary trace records from the hypervisor.
    Trace,
}

/// True if `name` is a valid partition name for channel names: 1-64 of `[A-Za-z0-9_-]`.
pub fn is_valid_partition_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PARTITION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ChannelName {
    /// `gdb:<partition>`.
    pub fn gdb(partition: impl Into<String>) -> Self {
        Self::Gdb {
            partition: partition.into(),
            vcpu: None,
        }
    }

    /// `gdb:<partition>.<vcpu>`.
    pub fn gdb_vcpu(partition: impl Into<String>, vcpu: u32) -> Self {
        Self::Gdb {
            partition: partition.into(),
            vcpu: Some(vcpu),
        }
    }

    /// `console:<partition>`.
    pub fn console(partition: impl Into<String>) -> Self {
        Self::Console {
            partition: partition.into(),
        }
    }

    /// The partition this channel is about, if any.
    pub fn partition(&self) -> Option<&str> {
        match self {
            Self::Gdb { partition, .. } | Self::Console { partition } => Some(partition),
            Self::Control | Self::Trace => None,
        }
    }

    /// True for channels that have one owner at a time (`gdb:*`).
    pub fn is_exclusive(&self) -> bool {
        matches!(self, Self::Gdb { .. })
    }

    /// Whether two exclusive channels cannot be held at once: the same `gdb:` channel, or a
    /// partition's whole-partition stub and one of its per-vCPU stubs (both would drive the
    /// same vCPUs). The link server and the gdb bridge both check claims with it.
    pub fn conflicts_with(&self, other: &ChannelName) -> bool {
        match (self, other) {
            (
                Self::Gdb {
                    partition: pa,
                    vcpu: va,
                },
                Self::Gdb {
                    partition: pb,
                    vcpu: vb,
                },
            ) => pa == pb && (va.is_none() || vb.is_none() || va == vb),
            _ => false,
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Control => f.write_str("control"),
            Self::Trace => f.write_str("trace"),
            Self::Gdb {
                partition,
                vcpu: None,
            } => write!(f, "gdb:{partition}"),
            Self::Gdb {
                partition,
                vcpu: Some(v),
            } => write!(f, "gdb:{partition}.{v}"),
            Self::Console { partition } => write!(f, "console:{partition}"),
        }
    }
}

impl FromStr for ChannelName {
    type Err = ChannelError;

    fn from_str(name: &str) -> Result<Self, ChannelError> {
        let bad_partition = |p: &str| ChannelError::BadPartition {
            name: name.to_owned(),
            partition: p.to_owned(),
        };
        match name {
            "control" => return Ok(Self::Control),
            "trace" => return Ok(Self::Trace),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("gdb:") {
            let (partition, vcpu) = match rest.split_once('.') {
                Some((p, v)) => {
                    let ok =
                        !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit());
                    let idx = ok.then(|| v.parse::<u32>().ok()).flatten();
                    let Some(idx) = idx else {
                        return Err(ChannelError::BadVcpu {
                            name: name.to_owned(),
                            vcpu: v.to_owned(),
                        });
                    };
                    (p, Some(idx))
                }
                None => (rest, None),
            };
            if !is_valid_partition_name(partition) {
                return Err(bad_partition(partition));
            }
            return Ok(Self::Gdb {
                partition: partition.to_owned(),
                vcpu,
            });
        }
        if let Some(partition) = name.strip_prefix("console:") {
            if partition.contains('.')
                && is_valid_partition_name(partition.split('.').next().unwrap_or(""))
            {
                return Err(ChannelError::UnexpectedVcpu {
                    name: name.to_owned(),
                });
            }
            if !is_valid_partition_name(partition) {
                return Err(bad_partition(partition));
            }
            return Ok(Self::Console {
                partition: partition.to_owned(),
            });
        }
        Err(ChannelError::UnknownKind {
            name: name.to_owned(),
        })
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        let cases = [
            ("control", ChannelName::Control),
            ("trace", ChannelName::Trace),
            ("gdb:control-app", ChannelName::gdb("control-app")),
            ("gdb:telemetry.3", ChannelName::gdb_vcpu("telemetry", 3)),
            ("gdb:p_1.0", ChannelName::gdb_vcpu("p_1", 0)),
            ("console:sensor_model", ChannelName::console("sensor_model")),
        ];
        for (s, n) in cases {
            assert_eq!(s.parse::<ChannelName>().unwrap(), n, "{s}");
            assert_eq!(n.to_string(), s);
        }
        assert!(ChannelName::gdb("a").is_exclusive());
        assert!(!ChannelName::console("a").is_exclusive());
        assert_eq!(ChannelName::gdb_vcpu("a", 1).partition(), Some("a"));
        assert_eq!(ChannelName::Trace.partition(), None);
    }

    #[test]
    fn a_partition_stub_conflicts_with_its_vcpu_stubs_only() {
        let (p, p0, p1) = (
            ChannelName::gdb("p"),
            ChannelName::gdb_vcpu("p", 0),
            ChannelName::gdb_vcpu("p", 1),
        );
        assert!(p.conflicts_with(&p) && p.conflicts_with(&p0) && p1.conflicts_with(&p));
        assert!(p0.conflicts_with(&p0) && !p0.conflicts_with(&p1));
        assert!(!p.conflicts_with(&ChannelName::gdb("q")));
        assert!(!p0.conflicts_with(&ChannelName::gdb_vcpu("q", 0)));
        assert!(!ChannelName::console("p").conflicts_with(&ChannelName::console("p")));
        assert!(!ChannelName::Trace.conflicts_with(&p));
    }

    #[test]
    fn rejects_bad_names() {
        use ChannelError as E;
        let kind = |s: &str| match s.parse::<ChannelName>() {
            Err(E::UnknownKind { .. }) => "kind",
            Err(E::BadPartition { .. }) => "partition",
            Err(E::BadVcpu { .. }) => "vcpu",
            Err(E::UnexpectedVcpu { .. }) => "unexpected-vcpu",
            Ok(_) => "ok",
        };
        assert_eq!(kind(""), "kind");
        assert_eq!(kind("Control"), "kind");
        assert_eq!(kind("gdb"), "kind");
        assert_eq!(kind("serial:x"), "kind");
        assert_eq!(kind("trace:x"), "kind");
        assert_eq!(kind("gdb:"), "partition");
        assert_eq!(kind("gdb:a b"), "partition");
        assert_eq!(kind("gdb:a/b"), "partition");
        assert_eq!(kind("gdb:.1"), "partition");
        assert_eq!(kind(&format!("gdb:{}", "a".repeat(65))), "partition");
        assert_eq!(kind(&format!("gdb:{}", "a".repeat(64))), "ok");
        assert_eq!(kind("gdb:a."), "vcpu");
        assert_eq!(kind("gdb:a.x"), "vcpu");
        assert_eq!(kind("gdb:a.-1"), "vcpu");
        assert_eq!(kind("gdb:a.+1"), "vcpu");
        assert_eq!(kind("gdb:a.1.2"), "vcpu");
        assert_eq!(kind("gdb:a.99999999999"), "vcpu");
        assert_eq!(kind("console:"), "partition");
        assert_eq!(kind("console:a.1"), "unexpected-vcpu");
        assert_eq!(kind("console:é"), "partition");
        let msg = "gdb:a.x".parse::<ChannelName>().unwrap_err().to_string();
        assert!(msg.contains("bad vCPU index \"x\""), "{msg}");
    }

    #[test]
    fn serde_as_string() {
        let n = ChannelName::gdb_vcpu("ctl", 2);
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""gdb:ctl.2""#);
        assert_eq!(
            serde_json::from_str::<ChannelName>(r#""gdb:ctl.2""#).unwrap(),
            n
        );
        assert!(serde_json::from_str::<ChannelName>(r#""gdb:""#).is_err());
        assert_eq!(serde_json::to_string(&ChannelId(5)).unwrap(), "5");
    }
}
