//! troupe: a Ray-style actor runtime for reinforcement-learning post-training.
//!
//! A head schedules actors onto nodes; a node agent on each node runs every actor in its own
//! worker process (the driver's executable started again); callers reach actors through typed
//! handles over long-lived gRPC streams.
//!
//! ```no_run
//! pub struct Counter { value: i64 }
//!
//! #[troupe::actor]
//! impl Counter {
//!     pub fn new(start: i64) -> Self { Counter { value: start } }
//!     pub fn add(&mut self, by: i64) -> i64 { self.value += by; self.value }
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     troupe::init(); // in a worker process this serves the actor and never returns
//!     let cluster = troupe::Cluster::local().await?;
//!     let counter = Counter::spawn(&cluster, troupe::SpawnOptions::new(), 1).await?;
//!     assert_eq!(counter.add(2).await?, 3);
//!     Ok(())
//! }
//! ```
//!
//! What a driver uses is public: `Cluster` (the entry point; `cluster.status().await?.table()`
//! for the tables `troupe status` prints), `actor` (traits, handles, options, groups), `data`
//! (columnar batches), `objects` (object references), `pipeline` (checked stage graphs),
//! `collective` and `reshard` (weight movement), `jobs` (the job client), `codec`, `report` and
//! the error types. The server side (head, node agent, worker, scheduler, rpc plumbing, the
//! trace simulator) is crate-private; what the `troupe` command (crate `troupe-cli`), the benches
//! and the multi-process tests need of it is re-exported, hidden, under `server`.

pub mod actor;
pub(crate) mod autoscaler;
mod client;
mod cluster;
pub mod codec;
pub mod collective;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
mod error;
pub(crate) mod head;
pub mod jobs;
pub mod logs;
pub(crate) mod node;
pub mod objects;
pub mod pipeline;
pub(crate) mod private_fs;
pub mod report;
pub mod reshard;
pub(crate) mod rpc;
pub(crate) mod scheduler;
#[doc(hidden)]
pub mod server;
pub(crate) mod sim;
pub mod timeline;
mod transport;
mod worker;

pub use actor::{Actor, ActorGroup, ActorHandle, ActorRef, BoxFuture, SpawnOptions};
pub use cluster::{
    Cluster, ClusterStatus, LocalClusterBuilder, PlacementGroup, PlacementGroupSpec,
};
pub use error::{ActorDeath, Error, RemotePanic, Result};
pub use transport::bytes_received as call_bytes_received;
pub use transport::bytes_sent as call_bytes_sent;
pub use transport::keep_awake;
pub use troupe_macros::actor;
pub use troupe_proto as proto;

/// Call first thing in `main`. In a process that a node agent started as a worker, this serves
/// the actor and exits the process when the worker is done: it never returns. Anywhere else it
/// sets up logging (filter from `TROUPE_LOG`, default `warn`) and returns.
///
/// It may be called from a plain `fn main` or from inside `#[tokio::main]`: in the latter case
/// the worker runs on a thread of its own with its own runtime.
pub fn init() {
    if worker::is_worker() {
        init_logging("info");
        let code = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::Builder::new()
                .name("troupe-worker-main".to_string())
                .spawn(worker::run_to_exit)
                .ok()
                .and_then(|thread| thread.join().ok())
                .unwrap_or(70)
        } else {
            worker::run_to_exit()
        };
        std::process::exit(code);
    }
    init_logging("warn");
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `TROUPE_LOG` (or `default`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TROUPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[doc(hidden)]
pub mod testing;

#[doc(hidden)]
pub mod __private {
    //! Items the `#[troupe::actor]` expansion refers to. Not a public API.
    pub use crate::actor::blocking::{run_blocking, MethodTiming};
    pub use crate::actor::registry::host;
    pub use crate::actor::{ActorFactory, BoxFuture, DispatchError, HostedActor};
    pub use bytes::Bytes;
    pub use inventory;
    pub use serde;
    pub use tokio::sync::RwLock;
}
