//! The weight-sync edge: after each learning step, the learners' new weights flow to the
//! generators. The pipeline owns the edge: it connects it once (joining whatever collective
//! groups the move needs) and runs it after every learning step; what moving weights means
//! (reshard over TCP, NCCL, a file reload in an inference engine) is the edge's own business.

use crate::actor::BoxFuture;

/// What one sync moved.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    /// The weight version the generators now serve.
    pub version: u64,
    pub milliseconds: f64,
    /// Bytes of weights moved (0 when the edge cannot tell).
    pub bytes: u64,
}

/// Moves weights from one group of the pipeline to another.
pub trait WeightSyncEdge: Send + Sync + 'static {
    /// The group whose stages learn (the pipeline's learning side).
    fn learning_group(&self) -> &str;
    /// The group that generates with the weights.
    fn generating_group(&self) -> &str;
    /// Joins what the sync needs; called once by `Pipeline::connect`, and again by
    /// `Pipeline::reconnect` after a member restarted: each call must form its groups anew
    /// (under new names), since a restarted member is in none of the old ones.
    fn connect(&self) -> BoxFuture<crate::Result<()>>;
    /// Moves the learners' current weights to every generator.
    fn sync(&self) -> BoxFuture<crate::Result<SyncOutcome>>;
}
