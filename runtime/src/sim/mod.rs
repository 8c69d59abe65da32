//! Scheduler simulations: replaying a cluster trace through the pure scheduler with a chosen
//! policy. `openb` follows the published "InitSchedule" experiment of the FGD paper on
//! Alibaba's GPU trace (shared/data/openb); `troupe sim openb` is its command line. `autoscale` replays the same trace in time against an
//! autoscaled cluster (`troupe sim autoscale`).

pub mod autoscale;
pub mod autoscale_policies;
pub mod openb;
pub mod trace;

pub use autoscale::run_autoscale;
pub use autoscale_policies::{node_types_of, policies, AutoscaleRun, SimPolicy};
pub use openb::{run_openb, OpenbRun, Workload};
pub use trace::{read_nodes, read_pods, read_timed_pods, Pod, TraceError};
