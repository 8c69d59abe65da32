//! Scheduler simulations: replaying a cluster trace through the pure scheduler with a chosen
//! policy. `openb` follows the published "InitSchedule" experiment of the FGD paper on
//! Alibaba's GPU trace (shared/data/openb); `troupe sim openb` is its command line.

pub mod openb;
pub mod trace;

pub use openb::{run_openb, OpenbRun, Workload};
pub use trace::{read_nodes, read_pods, Pod, TraceError};
