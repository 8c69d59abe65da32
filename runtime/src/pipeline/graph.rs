//! Building and checking the pipeline graph, and exporting it.

use crate::actor::BoxFuture;
use crate::data::Batch;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// How a stage's batch reaches the members of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// The same batch to every member; rank 0's result is kept.
    Broadcast,
    /// The rows split over the members; results concatenated in rank order.
    Split,
    /// Only rank 0.
    RankZero,
}

/// A stage's work on one member: (rank, batch of its input columns) -> batch of its outputs.
pub type StageFn = Arc<dyn Fn(usize, Batch) -> BoxFuture<crate::Result<Batch>> + Send + Sync>;

pub(crate) struct Stage {
    pub name: String,
    pub group: String,
    pub dispatch: Dispatch,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub run: StageFn,
}

/// A pipeline that cannot be built; the message names the stages at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    #[error("stage `{stage}` runs on group `{group}`, which was never declared")]
    UnknownGroup { stage: String, group: String },
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
    WeightSync {
        from: String,
        to: String,
        why: String,
    },
    #[error("stage `{stage}`: {why}")]
    Run { stage: String, why: String },
}

/// Collects groups, stages and the weight-sync edge, then checks them in `build`.
#[derive(Default)]
pub struct PipelineBuilder {
    groups: BTreeMap<String, usize>,
    source: Vec<String>,
    stages: Vec<Stage>,
    weight_sync: Option<(String, String)>,
}

impl PipelineBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a group of `size` members.
    pub fn group(mut self, name: &str, size: usize) -> Self {
        self.groups.insert(name.to_string(), size);
        self
    }

    /// The columns the input batch of each step provides.
    pub fn source(mut self, columns: &[&str]) -> Self {
        self.source = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// A stage: `run(rank, batch)` on members of `group`, reading `inputs`, producing `outputs`.
    pub fn stage<F>(
        mut self,
        name: &str,
        group: &str,
        dispatch: Dispatch,
        inputs: &[&str],
        outputs: &[&str],
        run: F,
    ) -> Self
    where
        F: Fn(usize, Batch) -> BoxFuture<crate::Result<Batch>> + Send + Sync + 'static,
    {
        self.stages.push(Stage {
            name: name.to_string(),
            group: group.to_string(),
            dispatch,
            inputs: inputs.iter().map(|c| c.to_string()).collect(),
            outputs: outputs.iter().map(|c| c.to_string()).collect(),
            run: Arc::new(run),
        });
        self
    }

    /// New weights flow from `trainer_group` to `rollout_group` after each step.
    pub fn weight_sync(mut self, trainer_group: &str, rollout_group: &str) -> Self {
        self.weight_sync = Some((trainer_group.to_string(), rollout_group.to_string()));
        self
    }

    /// Checks the graph and returns the runnable pipeline.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        let mut graph: DiGraph<usize, Vec<String>> = DiGraph::new();
        let source = graph.add_node(usize::MAX);
        let mut nodes = Vec::new();
        let mut names = BTreeSet::new();
        for (index, stage) in self.stages.iter().enumerate() {
            if !names.insert(stage.name.clone()) {
                return Err(PipelineError::DuplicateStage(stage.name.clone()));
            }
            if !self.groups.contains_key(&stage.group) {
                return Err(PipelineError::UnknownGroup {
                    stage: stage.name.clone(),
                    group: stage.group.clone(),
                });
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
        if let Some((from, to)) = &self.weight_sync {
            for group in [from, to] {
                if !self.groups.contains_key(group) {
                    return Err(PipelineError::WeightSync {
                        from: from.clone(),
                        to: to.clone(),
                        why: format!("group `{group}` was never declared"),
                    });
                }
            }
        }
        Ok(Pipeline {
            groups: self.groups,
            stages: self.stages,
            graph,
            nodes,
            source,
            weight_sync: self.weight_sync,
        })
    }
}

/// A checked pipeline.
pub struct Pipeline {
    pub(crate) groups: BTreeMap<String, usize>,
    pub(crate) stages: Vec<Stage>,
    pub(crate) graph: DiGraph<usize, Vec<String>>,
    pub(crate) nodes: Vec<NodeIndex>,
    pub(crate) source: NodeIndex,
    pub(crate) weight_sync: Option<(String, String)>,
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
            Some(stage) => stage
                .name
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
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
        if let Some((from, to)) = &self.weight_sync {
            let _ = writeln!(
                out,
                "  weights_{from} [shape=note, label=\"weights: {from} -> {to}\"];"
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
        if let Some((from, to)) = &self.weight_sync {
            let _ = writeln!(out, "  %% weight sync: {from} -> {to}");
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
