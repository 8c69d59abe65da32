//! The server side of troupe, for the `troupe` command (crate `troupe-cli`), the benches and the
//! multi-process tests: starting a head or a node agent, the cluster token and connections to
//! the head, private state directories, the scheduler and the trace simulator. Not a driver's
//! API, and not stable: a driver needs only `Cluster` and the public modules.
//!
//! The modules behind it are crate-private; each re-export here is something a user outside the
//! library really needs, so the compiler still reports what nothing uses.

/// Starting a head: the control plane of a cluster.
pub mod head {
    pub use crate::head::{start, HeadConfig, HeadHandle};
}

/// What a worker adds to each call to track it (calls in flight, the timeline), measured in
/// process, for the `actor_calls` bench.
pub mod diagnostics {
    pub use crate::worker::measure_call_bookkeeping;
}

/// Starting a node agent, and the resources a node offers.
pub mod node {
    pub use crate::node::{resources, start, NodeConfig, NodeHandle};
}

/// The cluster token and authenticated connections to the head.
pub mod rpc {
    pub use crate::rpc::auth::TOKEN_FILE_NAME;
    pub use crate::rpc::{connect, normalize_address, AuthChannel, Token};
}

/// Directories and files closed to other users (the state `troupe up` leaves).
pub mod private_fs {
    pub use crate::private_fs::{check_own_file, ensure_private_dir};
}

/// The autoscaler's configuration file, for `troupe head --autoscaler`, and what a node provider
/// built outside this crate (the `kubernetes` one) implements.
pub mod autoscaler {
    pub use crate::autoscaler::config::{
        AutoscalerConfig, ConfigError, NodeType, ProviderConfig, LAUNCH_ID_LABEL, NODE_TYPE_LABEL,
    };
    pub use crate::autoscaler::provider::{
        ExternalProvider, LaunchSpec, NodeProvider, ProviderError,
    };
}

/// The pure scheduler, as the head drives it (for benches and simulations).
pub mod scheduler {
    pub use crate::scheduler::*;
}

/// Replaying GPU-cluster traces through the scheduler (`troupe sim`).
pub mod sim {
    pub use crate::sim::{
        node_types_of, policies, read_nodes, read_pods, read_timed_pods, run_autoscale, run_openb,
        AutoscaleRun, OpenbRun, Pod, SimPolicy, TraceError, Workload,
    };
}
