//! The control channel's method set: wire types, param/result types, and notifications.
//!
//! Each method is a marker type implementing [`Method`]; servers match on [`Method::NAME`] and
//! decode [`Method::Params`], clients call [`LinkClient::call_typed`](crate::client::LinkClient::call_typed).
//! Partitions are referred to by name (as in channel names).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{ChannelId, ChannelName};

/// A control method: its name and its param and result types.
pub trait Method {
    /// JSON-RPC method name.
    const NAME: &'static str;
    /// Params (`()` = none; encoded without `params`).
    type Params: Serialize + DeserializeOwned;
    /// Result (`()` = `null`).
    type Result: Serialize + DeserializeOwned;
}

/// A server-to-client notification: its name and params.
pub trait Event {
    /// JSON-RPC method name of the notification.
    const NAME: &'static str;
    /// Params.
    type Params: Serialize + DeserializeOwned;
}

/// Lifecycle state of a partition, as sent on the wire: `{"kind":"running"}`,
/// `{"kind":"crashed","reason":"…"}`, `{"kind":"exited","code":0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionState {
    /// Built, not started yet.
    Created,
    /// vCPUs are scheduled.
    Running,
    /// Paused by a control request (`partition.pause`).
    Paused,
    /// Stopped by a debugger (breakpoint, step, interrupt).
    StoppedInDebugger,
    /// Every vCPU halted with interrupts disabled: it will never run again without a reset.
    Halted,
    /// Died on a fault the hypervisor could not deliver (e.g. triple fault, bad exit).
    Crashed {
        /// What happened.
        reason: String,
    },
    /// Exited through the exit hypercall.
    Exited {
        /// Exit code given by the guest.
        code: i32,
    },
}

impl PartitionState {
    /// The `kind` string (`running`, `stopped_in_debugger`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::StoppedInDebugger => "stopped_in_debugger",
            Self::Halted => "halted",
            Self::Crashed { .. } => "crashed",
            Self::Exited { .. } => "exited",
        }
    }

    /// True once the partition cannot run again without a reset.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Halted | Self::Crashed { .. } | Self::Exited { .. }
        )
    }
}

impl fmt::Display for PartitionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crashed { reason } => write!(f, "crashed ({reason})"),
            Self::Exited { code } => write!(f, "exited ({code})"),
            other => f.write_str(other.kind()),
        }
    }
}

/// State of one vCPU: a plain string on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuState {
    /// Created, not yet run.
    Created,
    /// In or around `KVM_RUN`.
    Running,
    /// Waiting in HLT for an interrupt.
    Halted,
    /// Parked by `partition.pause`.
    Paused,
    /// Parked by a debugger.
    StoppedInDebugger,
    /// Parked outside its partition's schedule window (runnable in its next window).
    OutOfWindow,
    /// Waiting for a device model's reply (the device is in [`VcpuInfo::device`]).
    BlockedOnDevice,
    /// Will not run again (partition crashed or exited).
    Stopped,
}

/// One vCPU in [`PartitionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuInfo {
    /// vCPU index within the partition (0-based).
    pub index: u32,
    /// Its state.
    pub state: VcpuState,
    /// With `blocked_on_device`: the device whose model it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// One entry of `partitions.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Numeric partition id (as used in trace records).
    pub id: u32,
    /// Partition name (as used in channel names and control params).
    pub name: String,
    /// Lifecycle state.
    pub state: PartitionState,
    /// vCPUs in index order.
    pub vcpus: Vec<VcpuInfo>,
    /// Path of the ELF image the partition was loaded from.
    pub image: String,
}

/// Result of `system.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// System name (from the system description).
    pub system: String,
    /// hvdk version of the hypervisor.
    pub version: String,
}

/// Params naming a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionParams {
    /// Partition name.
    pub partition: String,
}

/// Params of `partition.inject_irq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectIrqParams {
    /// Partition name.
    pub partition: String,
    /// vCPU index.
    pub vcpu: u32,
    /// Interrupt vector (32..=255 for external interrupts).
    pub vector: u8,
}

/// Params of `channel.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOpenParams {
    /// Channel to open.
    pub name: ChannelName,
}

/// Result of `channel.open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOpenResult {
    /// Id the channel's frames will carry (never 0).
    pub id: ChannelId,
}

/// Params of `channel.close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCloseParams {
    /// Id returned by `channel.open`.
    pub id: ChannelId,
}

/// Params of `trace.start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStartParams {
    /// Only these partitions (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<String>>,
    /// Only these event classes (`exits`, `irq`, `hypercall`, `sched`, `device`, `ipc`,
    /// `marker`, `all`; see `trace::CLASSES`). All when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// Result of `partitions.stats`: cumulative counters since the system started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionsStats {
    /// When the counters were read, on the trace clock (ns): rates are deltas over deltas of this.
    pub timestamp_ns: u64,
    /// Every partition, in id order.
    pub partitions: Vec<PartitionStats>,
}

/// Counters of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    /// Partition id.
    pub id: u32,
    /// Partition name.
    pub name: String,
    /// Lifecycle state.
    pub state: PartitionState,
    /// Hypercalls made.
    pub hypercalls: u64,
    /// Interrupts injected.
    pub irqs_injected: u64,
    /// Port or MMIO accesses nothing answered.
    pub unmapped_accesses: u64,
    /// Trace records dropped in this partition's rings (sum over vCPUs).
    pub lost_records: u64,
    /// Per vCPU.
    pub vcpus: Vec<VcpuStats>,
}

/// Counters of one vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuStats {
    /// vCPU index.
    pub index: u32,
    /// State.
    pub state: VcpuState,
    /// ns spent in the guest (inside KVM_RUN).
    pub guest_ns: u64,
    /// VM exits.
    pub exits: u64,
    /// VM exits by KVM exit reason (JSON object, keys are the reason numbers as strings; only
    /// non-zero entries; `trace::exit_reason_name` names them).
    pub exits_by_reason: std::collections::BTreeMap<u32, u64>,
    /// Interrupts raised (including coalesced raises).
    pub irqs_raised: u64,
    /// Interrupts injected.
    pub irqs_injected: u64,
    /// Interrupts injected by vector (keys are vectors as strings; only non-zero entries).
    pub irqs_by_vector: std::collections::BTreeMap<u8, u64>,
    /// Hypercalls.
    pub hypercalls: u64,
    /// Trace records offered to this vCPU's ring while tracing was on.
    pub trace_produced: u64,
    /// Trace records dropped because the ring was full.
    pub lost_records: u64,
}

/// Params of the `partition.state_changed` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChangedParams {
    /// Partition name.
    pub partition: String,
    /// New state.
    pub state: PartitionState,
    /// Extra human-readable detail (e.g. "breakpoint at 0x1000 on vCPU 1").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Params of the `channel.closed` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelClosedParams {
    /// The channel that the server closed.
    pub id: ChannelId,
    /// Why (e.g. "partition reset").
    pub reason: String,
}

macro_rules! method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $params:ty, $result:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
        }
    };
}

method!(
    /// `system.info` → [`SystemInfo`].
    SystemInfoMethod, "system.info", (), SystemInfo
);
method!(
    /// `partitions.list` → `[PartitionInfo]`.
    PartitionsList, "partitions.list", (), Vec<PartitionInfo>
);
method!(
    /// `partition.pause` {partition} → null.
    PartitionPause, "partition.pause", PartitionParams, ()
);
method!(
    /// `partition.resume` {partition} → null.
    PartitionResume, "partition.resume", PartitionParams, ()
);
method!(
    /// `partition.reset` {partition} → null.
    PartitionReset, "partition.reset", PartitionParams, ()
);
method!(
    /// `partition.inject_irq` {partition, vcpu, vector} → null.
    PartitionInjectIrq, "partition.inject_irq", InjectIrqParams, ()
);
method!(
    /// `channel.open` {name} → {id}.
    ChannelOpen, "channel.open", ChannelOpenParams, ChannelOpenResult
);
method!(
    /// `channel.close` {id} → null.
    ChannelClose, "channel.close", ChannelCloseParams, ()
);
method!(
    /// `events.subscribe` → null; then `partition.state_changed` notifications follow.
    EventsSubscribe, "events.subscribe", (), ()
);
method!(
    /// `events.unsubscribe` → null.
    EventsUnsubscribe, "events.unsubscribe", (), ()
);
method!(
    /// `trace.start` {partitions?} → null; records flow on an open `trace` channel.
    TraceStart, "trace.start", TraceStartParams, ()
);
method!(
    /// `trace.stop` → null.
    TraceStop, "trace.stop", (), ()
);
method!(
    /// `partitions.stats` → [`PartitionsStats`].
    PartitionsStatsMethod, "partitions.stats", (), PartitionsStats
);

/// Every method name of protocol v1.
pub const METHODS: &[&str] = &[
    SystemInfoMethod::NAME,
    PartitionsList::NAME,
    PartitionPause::NAME,
    PartitionResume::NAME,
    PartitionReset::NAME,
    PartitionInjectIrq::NAME,
    ChannelOpen::NAME,
    ChannelClose::NAME,
    EventsSubscribe::NAME,
    EventsUnsubscribe::NAME,
    TraceStart::NAME,
    TraceStop::NAME,
    PartitionsStatsMethod::NAME,
];

/// `partition.state_changed` notification.
#[derive(Debug, Clone, Copy)]
pub struct PartitionStateChanged;
impl Event for PartitionStateChanged {
    const NAME: &'static str = "partition.state_changed";
    type Params = StateChangedParams;
}

/// `channel.closed` notification (server closed a channel, e.g. on partition reset).
#[derive(Debug, Clone, Copy)]
pub struct ChannelClosed;
impl Event for ChannelClosed {
    const NAME: &'static str = "channel.closed";
    type Params = ChannelClosedParams;
}

/// Encode a request for method `M`.
pub fn request_bytes<M: Method>(
    id: &crate::rpc::RequestId,
    params: &M::Params,
) -> Result<Vec<u8>, serde_json::Error> {
    crate::rpc::encode_request(id, M::NAME, params)
}

/// Encode a notification for event `E`.
pub fn event_bytes<E: Event>(params: &E::Params) -> Result<Vec<u8>, serde_json::Error> {
    crate::rpc::encode_notification(E::NAME, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{Message, RequestId, encode_result};

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn method_requests_match_spec() {
        let id = RequestId::Number(1);
        assert_eq!(
            s(request_bytes::<SystemInfoMethod>(&id, &()).unwrap()),
            r#"{"jsonrpc":"2.0","id":1,"method":"system.info"}"#
        );
        assert_eq!(
            s(request_bytes::<PartitionPause>(
                &id,
                &PartitionParams {
                    partition: "control".into()
                }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":1,"method":"partition.pause","params":{"partition":"control"}}"#
        );
        assert_eq!(
            s(request_bytes::<PartitionInjectIrq>(
                &RequestId::Number(2),
                &InjectIrqParams {
                    partition: "telemetry".into(),
                    vcpu: 1,
                    vector: 48
                }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":2,"method":"partition.inject_irq","params":{"partition":"telemetry","vcpu":1,"vector":48}}"#
        );
        assert_eq!(
            s(request_bytes::<ChannelOpen>(
                &RequestId::Number(3),
                &ChannelOpenParams {
                    name: ChannelName::gdb_vcpu("control", 0)
                }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":3,"method":"channel.open","params":{"name":"gdb:control.0"}}"#
        );
        assert_eq!(
            s(request_bytes::<ChannelClose>(
                &RequestId::Number(4),
                &ChannelCloseParams { id: ChannelId(2) }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":4,"method":"channel.close","params":{"id":2}}"#
        );
        assert_eq!(
            s(
                request_bytes::<TraceStart>(&RequestId::Number(5), &TraceStartParams::default())
                    .unwrap()
            ),
            r#"{"jsonrpc":"2.0","id":5,"method":"trace.start","params":{}}"#
        );
    }

    #[test]
    fn results_and_events_match_spec() {
        let list = vec![PartitionInfo {
            id: 0,
            name: "control".into(),
            state: PartitionState::Running,
            vcpus: vec![
                VcpuInfo {
                    index: 0,
                    state: VcpuState::Running,
                    device: None,
                },
                VcpuInfo {
                    index: 1,
                    state: VcpuState::BlockedOnDevice,
                    device: Some("sensor".into()),
                },
            ],
            image: "target/guests/control.elf".into(),
        }];
        assert_eq!(
            s(encode_result(&RequestId::Number(2), &list).unwrap()),
            r#"{"jsonrpc":"2.0","id":2,"result":[{"id":0,"name":"control","state":{"kind":"running"},"vcpus":[{"index":0,"state":"running"},{"index":1,"state":"blocked_on_device","device":"sensor"}],"image":"target/guests/control.elf"}]}"#
        );
        assert_eq!(
            s(encode_result(
                &RequestId::Number(3),
                &ChannelOpenResult { id: ChannelId(1) }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":3,"result":{"id":1}}"#
        );
        assert_eq!(
            s(encode_result(
                &RequestId::Number(1),
                &SystemInfo {
                    system: "demo".into(),
                    version: "0.1.0".into()
                }
            )
            .unwrap()),
            r#"{"jsonrpc":"2.0","id":1,"result":{"system":"demo","version":"0.1.0"}}"#
        );
        assert_eq!(
            s(event_bytes::<PartitionStateChanged>(&StateChangedParams {
                partition: "telemetry".into(),
                state: PartitionState::Crashed {
                    reason: "triple fault".into()
                },
                detail: Some("vCPU 0 at rip 0x1000".into()),
            })
            .unwrap()),
            r#"{"jsonrpc":"2.0","method":"partition.state_changed","params":{"partition":"telemetry","state":{"kind":"crashed","reason":"triple fault"},"detail":"vCPU 0 at rip 0x1000"}}"#
        );
        assert_eq!(
            s(event_bytes::<ChannelClosed>(&ChannelClosedParams {
                id: ChannelId(4),
                reason: "partition reset".into()
            })
            .unwrap()),
            r#"{"jsonrpc":"2.0","method":"channel.closed","params":{"id":4,"reason":"partition reset"}}"#
        );
    }

    #[test]
    fn states_round_trip() {
        for st in [
            PartitionState::Created,
            PartitionState::Running,
            PartitionState::Paused,
            PartitionState::StoppedInDebugger,
            PartitionState::Halted,
            PartitionState::Crashed { reason: "x".into() },
            PartitionState::Exited { code: -3 },
        ] {
            let j = serde_json::to_value(&st).unwrap();
            assert_eq!(j["kind"], st.kind());
            assert_eq!(serde_json::from_value::<PartitionState>(j).unwrap(), st);
        }
        assert_eq!(
            serde_json::to_string(&PartitionState::Exited { code: 0 }).unwrap(),
            r#"{"kind":"exited","code":0}"#
        );
        assert_eq!(
            serde_json::to_string(&VcpuState::StoppedInDebugger).unwrap(),
            r#""stopped_in_debugger""#
        );
        assert_eq!(
            PartitionState::Crashed {
                reason: "tf".into()
            }
            .to_string(),
            "crashed (tf)"
        );
        assert!(serde_json::from_str::<PartitionState>(r#"{"kind":"bogus"}"#).is_err());
    }

    #[test]
    fn server_side_decoding_of_a_request() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":9,"method":"channel.open","params":{"name":"gdb:bad name"}}"#,
        )
        .unwrap();
        let Message::Request(req) = m else { panic!() };
        assert_eq!(req.method, ChannelOpen::NAME);
        let err = req.params_as::<ChannelOpenParams>().unwrap_err();
        assert_eq!(err.code, crate::rpc::codes::INVALID_PARAMS);
        assert!(
            err.message.contains("bad partition name"),
            "{}",
            err.message
        );
        assert!(METHODS.contains(&"partition.inject_irq"));
    }
}
