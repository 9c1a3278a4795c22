//! gdb sessions opened in the hypervisor's own process, without the host link: for a gdb
//! bridge that runs beside the agent (`hv run`). gdb's bytes go straight into the stub on the
//! thread that read them, and its replies straight to gdb: no frame, no socket and no thread
//! between them. Ownership is the link's: the guest is claimed in the same registry as the
//! `gdb:` channels of link clients, so one debugger per guest holds across both paths.

use std::sync::Arc;

use hv_core::PartitionHandle;
use hv_link::rpc::RpcError;
use hv_link::server::{ClaimGuard, ClientId};
use hv_link::{ChannelClaims, ChannelName};

use super::{GdbEnded, GdbOutput, GdbSession, GdbSessionOptions};

/// A gdb session of an in-process client; closing (or dropping) it detaches like closing its
/// channel would, then releases the guest.
#[derive(Debug)]
pub struct LocalGdbSession {
    session: GdbSession,
    _claim: ClaimGuard,
}

impl LocalGdbSession {
    /// Feeds bytes from gdb (see [`GdbSession::input`]).
    pub fn input(&self, bytes: &[u8]) {
        self.session.input(bytes);
    }

    /// Detaches (the guest runs on unless configured otherwise), waits for the cleanup, then
    /// releases the guest for the next debugger.
    pub fn close(self) {
        let LocalGdbSession { session, _claim } = self;
        session.close();
    }
}

/// Opens in-process gdb sessions on an agent's partitions ([`Agent::local_gdb`]); cheap to
/// clone.
///
/// [`Agent::local_gdb`]: crate::Agent::local_gdb
#[derive(Clone)]
pub struct LocalGdb {
    pub(crate) partitions: Arc<[PartitionHandle]>,
    pub(crate) claims: ChannelClaims,
    pub(crate) options: GdbSessionOptions,
}

impl std::fmt::Debug for LocalGdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGdb").finish_non_exhaustive()
    }
}

impl LocalGdb {
    /// Opens `name` (`gdb:<p>` or `gdb:<p>.<vcpu>`) for `client_name`: gdb's bytes go in through
    /// [`LocalGdbSession::input`], its replies out through `output`; `ended` is called if the
    /// session ends on its own. Refused as `channel.open` on the link would refuse it (unknown
    /// partition or vCPU, the guest owned by another debugger on either path).
    pub fn open(
        &self,
        name: &ChannelName,
        client_name: &str,
        output: GdbOutput,
        ended: GdbEnded,
    ) -> Result<LocalGdbSession, RpcError> {
        let ChannelName::Gdb { partition, vcpu } = name else {
            return Err(RpcError::unknown_channel(format!(
                "{name} is not a gdb channel"
            )));
        };
        let p = self
            .partitions
            .iter()
            .find(|p| p.name() == partition)
            .ok_or_else(|| RpcError::unknown_partition(partition))?;
        if let Some(v) = *vcpu
            && v as usize >= p.vcpus().len()
        {
            return Err(RpcError::unknown_vcpu(p.name(), v));
        }
        let claim = self.claims.claim(name, ClientId::next(), client_name)?;
        let session = GdbSession::start_notifying(
            p.clone(),
            self.partitions.clone(),
            *vcpu,
            output,
            self.options,
            ended,
        )
        .map_err(RpcError::internal)?;
        tracing::info!(client = client_name, %name, "debug agent: gdb attached (in process)");
        Ok(LocalGdbSession {
            session,
            _claim: claim,
        })
    }
}
