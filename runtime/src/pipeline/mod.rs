//! Pipelines: RL dataflow as a graph. Stages are method calls on actor groups with a dispatch
//! mode; an edge runs from a stage to every stage that consumes a column it produces (or from
//! the source, for the driver's input columns); a weight-sync edge, owned by the pipeline, moves
//! weights from the learning group to the generating group. The graph is checked when built
//! (cycles, columns nobody produces or two stages produce, a group name with two sizes: each
//! error names the stages at fault), exported to DOT and Mermaid, and executed with independent
//! stages running concurrently. The
//! batches stay on the members that made them and travel between members directly
//! (`StageCall`); the driver sends calls and reads receipts and step scalars.

mod edge;
mod graph;
mod publish;
mod run;
mod staleness;
mod step_data;

pub use edge::{SyncOutcome, WeightSyncEdge};
pub use graph::{Dispatch, Pipeline, PipelineBuilder, PipelineError};
pub use run::{StageTiming, StepReport};
pub use staleness::{BoxError, NoObserver, StepObserver};
pub use step_data::{StageCall, StageReceipt};

#[cfg(test)]
mod tests;
