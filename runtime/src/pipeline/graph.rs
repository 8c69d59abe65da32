//! Building and checking the pipeline graph, and exporting it. A stage is a method call on the
//! members of an `ActorGroup` (the pipeline holds the group), reading named columns and
//! producing others; edges follow from the column names.

use super::edge::WeightSyncEdge;
use super::step_data::{StageCall, StageReceipt};
use crate::actor::{ActorGroup, BoxFuture};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

/// How a stage's rows reach the members of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Every member gets every row; all run, and readers take rank 0's output.
    Broadcast,
    /// The rows split over the members in contiguous near-equal parts, in rank order.
    Split,
    /// Only rank 0, with every row.
    RankZero,
}

/// A stage's calls on its group: one `StageCall` per member that runs (rank order), a receipt
/// from each, dispatched by `ActorGroup::per_rank`.
pub(crate) type StageRunner =
    Arc<dyn Fn(Vec<StageCall>) -> BoxFuture<crate::Result<Vec<StageReceipt>>> + Send + Sync>;

pub(crate) struct Stage {
    pub name: String,
    pub group: String,
    pub dispatch: Dispatch,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub run: StageRunner,
}

/// A pipeline that cannot be built, or a step that failed; the message names the stages at
/// fault, and a failed call keeps its cause (the actor, its node, the method and its error).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("group `{group}` is declared with {first} and with {second} members")]
    GroupSize {
        group: String,
        first: usize,
        second: usize,
    },
    #[error(
        "stage `{stage}` needs column `{column}`, which neither the source nor any stage produces"
    )]
    MissingColumn { stage: String, column: String },
    #[error("column `{column}` is produced by both `{first}` and `{second}`")]
    DuplicateColumn {
        column: String,
        first: String,
        second: String,
    },
    #[error("the stages {stages:?} form a cycle")]
    Cycle { stages: Vec<String> },
    #[error("two stages are named `{0}`")]
    DuplicateStage(String),
    #[error("weight sync from `{from}` to `{to}`: {why}")]
    WeightSyncGraph {
        from: String,
        to: String,
        why: String,
    },
    #[error("weight sync from `{from}` to `{to}` failed")]
    WeightSync {
        from: String,
        to: String,
        #[source]
        source: Box<crate::Error>,
    },
    #[error("stage `{stage}` (group `{group}`) failed")]
    Stage {
        stage: String,
        group: String,
        #[source]
        source: Box<crate::Error>,
    },
    #[error("stage `{stage}`: the step's data")]
    Data {
        stage: String,
        #[source]
        source: crate::data::BatchError,
    },
    #[error("the step observer failed")]
    Observer {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stage `{stage}`: {why}")]
    Run { stage: String, why: String },
    #[error("{what} did not finish within {seconds:.0} s (the pipeline's stage deadline)")]
    Deadline { what: String, seconds: f64 },
}

/// How long a stage's calls (or a weight sync) may take by default before the step fails.
pub const DEFAULT_STAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1800);

/// Collects groups, stages and the weight-sync edge, then checks them in `build`.
#[derive(Default)]
pub struct PipelineBuilder {
    groups: BTreeMap<String, usize>,
    source: Vec<String>,
    stages: Vec<Stage>,
    weight_sync: Option<Arc<dyn WeightSyncEdge>>,
    keep_steps: u64,
    stage_deadline: Option<std::time::Duration>,
    error: Option<PipelineError>,
}

impl PipelineBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The columns the driver's input batch of each step provides (none when a stage with no
    /// inputs makes each step's rows, as a prompt source does).
    pub fn source(mut self, columns: &[&str]) -> Self {
        self.source = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// A stage named `name`: `call(member, stage_call)` on the members of `group` (named by
    /// `group.name()`), reading `inputs` and producing `outputs`. The member's method takes the
    /// `StageCall`, fetches its inputs with `StageCall::inputs`, and answers
    /// `StageCall::finish(output)`.
    pub fn stage<H, F, Fut>(
        mut self,
        name: &str,
        group: &ActorGroup<H>,
        dispatch: Dispatch,
        inputs: &[&str],
        outputs: &[&str],
        call: F,
    ) -> Self
    where
        H: Clone + Send + Sync + 'static,
        F: Fn(H, StageCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Result<StageReceipt>> + Send + 'static,
    {
        let size = group.world_size();
        match self.groups.insert(group.name().to_string(), size) {
            Some(first) if first != size && self.error.is_none() => {
                self.error = Some(PipelineError::GroupSize {
                    group: group.name().to_string(),
                    first,
                    second: size,
                });
            }
            _ => {}
        }
        let (group_handle, call) = (group.clone(), Arc::new(call));
        let run: StageRunner = Arc::new(move |calls: Vec<StageCall>| {
            let (group, call) = (group_handle.clone(), call.clone());
            Box::pin(async move {
                let mut calls = calls;
                if calls.len() == 1 {
                    // Rank 0 alone (a `RankZero` stage, or a group of one).
                    let stage_call = calls.remove(0);
                    let receipt = group.rank_zero(|member| call(member, stage_call)).await?;
                    return Ok(vec![receipt]);
                }
                group
                    .per_rank(calls, |member, stage_call| call(member, stage_call))
                    .await
            })
        });
        self.stages.push(Stage {
            name: name.to_string(),
            group: group.name().to_string(),
            dispatch,
            inputs: inputs.iter().map(|c| c.to_string()).collect(),
            outputs: outputs.iter().map(|c| c.to_string()).collect(),
            run,
        });
        self
    }

    /// New weights flow over `edge` (from its learning group to its generating group) after
    /// each learning step; `Pipeline::connect` joins it.
    pub fn weight_sync(mut self, edge: impl WeightSyncEdge) -> Self {
        self.weight_sync = Some(Arc::new(edge));
        self
    }

    /// Each member keeps its outputs of this many past steps (default 2) besides the current
    /// one; raise it when consumers may run further behind (bounded staleness does this
    /// itself).
    pub fn keep_steps(mut self, steps: u64) -> Self {
        self.keep_steps = steps;
        self
    }

    /// How long one stage's calls (all members together), or one weight sync, may take before
    /// the step fails with `PipelineError::Deadline` (default 30 minutes): a member that hangs
    /// is reported, not waited for forever.
    pub fn stage_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.stage_deadline = Some(deadline);
        self
    }

    /// Checks the graph and returns the runnable pipeline.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut graph: DiGraph<usize, Vec<String>> = DiGraph::new();
        let source = graph.add_node(usize::MAX);
        let mut nodes = Vec::new();
        let mut names = BTreeSet::new();
        for (index, stage) in self.stages.iter().enumerate() {
            if !names.insert(stage.name.clone()) {
                return Err(PipelineError::DuplicateStage(stage.name.clone()));
            }
            nodes.push(graph.add_node(index));
        }
        let mut producer: BTreeMap<&str, (NodeIndex, String)> = BTreeMap::new();
        for column in &self.source {
            producer.insert(column, (source, "source".to_string()));
        }
        for (index, stage) in self.stages.iter().enumerate() {
            for column in &stage.outputs {
                if let Some((_, first)) =
                    producer.insert(column, (nodes[index], stage.name.clone()))
                {
                    return Err(PipelineError::DuplicateColumn {
                        column: column.clone(),
                        first,
                        second: stage.name.clone(),
                    });
                }
            }
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let mut incoming: BTreeMap<NodeIndex, Vec<String>> = BTreeMap::new();
            for column in &stage.inputs {
                let (from, _) =
                    producer
                        .get(column.as_str())
                        .ok_or_else(|| PipelineError::MissingColumn {
                            stage: stage.name.clone(),
                            column: column.clone(),
                        })?;
                incoming.entry(*from).or_default().push(column.clone());
            }
            for (from, columns) in incoming {
                graph.add_edge(from, nodes[index], columns);
            }
        }
        if let Err(cycle) = petgraph::algo::toposort(&graph, None) {
            let mut stages: Vec<String> = petgraph::algo::kosaraju_scc(&graph)
                .into_iter()
                .find(|component| component.contains(&cycle.node_id()) || component.len() > 1)
                .unwrap_or_else(|| vec![cycle.node_id()])
                .into_iter()
                .filter_map(|node| self.stages.get(graph[node]).map(|stage| stage.name.clone()))
                .collect();
            stages.sort();
            return Err(PipelineError::Cycle { stages });
        }
        if let Some(edge) = &self.weight_sync {
            for group in [edge.learning_group(), edge.generating_group()] {
                if !self.groups.contains_key(group) {
                    return Err(PipelineError::WeightSyncGraph {
                        from: edge.learning_group().to_string(),
                        to: edge.generating_group().to_string(),
                        why: format!("no stage runs on group `{group}`"),
                    });
                }
            }
        }
        Ok(Pipeline {
            id: rand_id(),
            groups: self.groups,
            stages: self.stages,
            graph,
            nodes,
            source,
            source_columns: self.source,
            weight_sync: self.weight_sync,
            keep_steps: if self.keep_steps == 0 {
                2
            } else {
                self.keep_steps
            },
            stage_deadline: self.stage_deadline.unwrap_or(DEFAULT_STAGE_DEADLINE),
            connected: tokio::sync::Mutex::new(false),
            wired: std::sync::Mutex::new(BTreeMap::new()),
            next_step: std::sync::atomic::AtomicUsize::new(0),
            last_report: std::sync::Mutex::new(None),
            unsent_spans: std::sync::Mutex::new(Vec::new()),
        })
    }
}

fn rand_id() -> u64 {
    let uuid = uuid::Uuid::new_v4();
    let bytes = uuid.as_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// A checked pipeline.
pub struct Pipeline {
    /// Names this pipeline's step outputs on the members.
    pub(crate) id: u64,
    pub(crate) groups: BTreeMap<String, usize>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) graph: DiGraph<usize, Vec<String>>,
    pub(crate) nodes: Vec<NodeIndex>,
    pub(crate) source: NodeIndex,
    pub(crate) source_columns: Vec<String>,
    pub(crate) weight_sync: Option<Arc<dyn WeightSyncEdge>>,
    pub(crate) keep_steps: u64,
    pub(crate) stage_deadline: std::time::Duration,
    /// Whether the weight-sync edge is connected (a member's restart undoes it: `reconnect`).
    pub(crate) connected: tokio::sync::Mutex<bool>,
    /// The wiring hash each (stage, rank) member last acknowledged.
    pub(crate) wired: std::sync::Mutex<BTreeMap<(usize, usize), u64>>,
    /// The index `run_step` gives its next step.
    pub(crate) next_step: std::sync::atomic::AtomicUsize,
    /// The latest step report sent to the head, completed by a later `sync_weights`.
    pub(crate) last_report: std::sync::Mutex<Option<troupe_proto::PipelineReport>>,
    /// Stage and sync spans recorded since the last report, for the head (`troupe timeline`).
    pub(crate) unsent_spans: std::sync::Mutex<Vec<troupe_proto::Span>>,
}

impl Pipeline {
    fn label(&self, node: NodeIndex) -> String {
        match self.stages.get(self.graph[node]) {
            Some(stage) => format!(
                "{}\\n{} x{} ({:?})",
                stage.name,
                stage.group,
                self.groups.get(&stage.group).copied().unwrap_or(0),
                stage.dispatch
            ),
            None => "source".to_string(),
        }
    }

    fn id(&self, node: NodeIndex) -> String {
        match self.stages.get(self.graph[node]) {
            Some(stage) => format!(
                "stage_{}",
                stage
                    .name
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
            None => "source".to_string(),
        }
    }

    /// Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n");
        for node in self.graph.node_indices() {
            let _ = writeln!(out, "  {} [label=\"{}\"];", self.id(node), self.label(node));
        }
        for edge in self.graph.edge_indices() {
            if let Some((from, to)) = self.graph.edge_endpoints(edge) {
                let _ = writeln!(
                    out,
                    "  {} -> {} [label=\"{}\"];",
                    self.id(from),
                    self.id(to),
                    self.graph[edge].join(", ")
                );
            }
        }
        if let Some(edge) = &self.weight_sync {
            let (from, to) = (edge.learning_group(), edge.generating_group());
            let id = from.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
            let _ = writeln!(
                out,
                "  weights_{id} [shape=note, label=\"weights: {from} -> {to}\"];"
            );
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for node in self.graph.node_indices() {
            let _ = writeln!(
                out,
                "  {}[\"{}\"]",
                self.id(node),
                self.label(node).replace("\\n", "<br/>")
            );
        }
        for edge in self.graph.edge_indices() {
            if let Some((from, to)) = self.graph.edge_endpoints(edge) {
                let _ = writeln!(
                    out,
                    "  {} -->|{}| {}",
                    self.id(from),
                    self.graph[edge].join(", "),
                    self.id(to)
                );
            }
        }
        if let Some(edge) = &self.weight_sync {
            let _ = writeln!(
                out,
                "  %% weight sync: {} -> {}",
                edge.learning_group(),
                edge.generating_group()
            );
        }
        out
    }

    /// Stage names in an order that respects the edges.
    pub fn order(&self) -> Vec<String> {
        petgraph::algo::toposort(&self.graph, None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|node| {
                self.stages
                    .get(self.graph[node])
                    .map(|stage| stage.name.clone())
            })
            .collect()
    }
}
