//! Pipelines: RL dataflow as a graph. Stages are calls on actor groups with a dispatch mode;
//! an edge runs from a stage to every stage that consumes a column it produces (or from the
//! source, for the input's columns); a weight-sync edge runs from the trainer group to the
//! rollout group. The graph is checked when built (cycles, columns nobody produces, unknown
//! groups: each error names the stages at fault), exported to DOT and Mermaid, and executed with
//! independent stages running concurrently and each stage's time and throughput recorded.

mod graph;
mod run;
mod staleness;

pub use graph::{Dispatch, Pipeline, PipelineBuilder, PipelineError, StageFn};
pub use run::{StageTiming, StepReport};

#[cfg(test)]
mod tests;
