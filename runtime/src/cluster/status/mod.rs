//! `ClusterStatus`: what `Cluster::status` returns (the head's status reply: nodes with their
//! resources, use and GPU holders, actors with why a pending one waits, jobs, placement groups,
//! the policy and pending demand), and its two renderings: the tables `troupe status` prints
//! (`table`) and the JSON object `troupe status --json` prints (`to_json`), for drivers and
//! scripts alike. The placement-group and demand parts are in `status/scheduling.rs`.

mod autoscaler;
mod scheduling;

use serde_json::{json, Value};
use std::fmt::Write as _;
use troupe_proto::ClusterStatusReply;

/// The cluster as the head sees it. Its fields are the reply's (`status.nodes`,
/// `status.actors`, ...), read through `Deref`; `table()` and `to_json()` render it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus(ClusterStatusReply);

impl ClusterStatus {
    /// Nodes, actors, jobs, placement groups and pending demand as the tables `troupe status`
    /// prints (sections with nothing to show are left out).
    pub fn table(&self) -> String {
        to_table(&self.0)
    }

    /// The JSON form `troupe status --json` prints: `{"nodes": [...], "actors": [...], "jobs":
    /// [...], "placement_groups": [...], "policy": ..., "pending_demand": {...}}`.
    pub fn to_json(&self) -> Value {
        to_json(&self.0)
    }

    /// The head's reply itself.
    pub fn into_reply(self) -> ClusterStatusReply {
        self.0
    }
}

impl From<ClusterStatusReply> for ClusterStatus {
    fn from(reply: ClusterStatusReply) -> Self {
        ClusterStatus(reply)
    }
}

impl std::ops::Deref for ClusterStatus {
    type Target = ClusterStatusReply;

    fn deref(&self) -> &ClusterStatusReply {
        &self.0
    }
}

impl std::fmt::Display for ClusterStatus {
    /// The tables of `table()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}

fn state_name(state: troupe_proto::ActorState) -> String {
    state
        .as_str_name()
        .trim_start_matches("ACTOR_STATE_")
        .to_lowercase()
}

fn to_json(status: &ClusterStatusReply) -> Value {
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|node| {
            let total = node.total.clone().unwrap_or_default();
            json!({
                "id": node.id,
                "state": if node.alive { "alive" } else { "dead" },
                "address": node.address,
                "hostname": node.hostname,
                "ms_since_heartbeat": node.ms_since_heartbeat,
                "resources": {
                    "cpus": total.cpu_milli as f64 / 1000.0,
                    "memory_bytes": total.memory_bytes,
                    "gpus": total.gpus.len(),
                    "custom": total.custom,
                    "labels": total.labels,
                },
                "used": {
                    "cpus": node.cpu_milli_used as f64 / 1000.0,
                    "memory_bytes": node.memory_bytes_used,
                    "gpus": node.gpus.iter().map(|gpu| gpu.milli_used as f64 / 1000.0).sum::<f64>(),
                    "custom": node.custom_used,
                },
                "gpus": node.gpus.iter().map(|gpu| json!({
                    "index": gpu.index,
                    "model": gpu.model,
                    "used": gpu.milli_used as f64 / 1000.0,
                    "actors": gpu.actor_ids,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let actors: Vec<Value> = status
        .actors
        .iter()
        .map(|actor| {
            json!({
                "id": actor.id,
                "name": actor.name,
                "type": actor.type_name,
                "state": state_name(actor.state()),
                "node": actor.node_id,
                "gpus": actor.gpus.iter().map(|gpu| gpu.index).collect::<Vec<_>>(),
                "gpu_fraction": actor.gpus.iter().map(|gpu| gpu.milli as f64 / 1000.0).sum::<f64>(),
                "restarts": actor.restarts,
                "max_restarts": actor.max_restarts,
                "pid": actor.pid,
                "detached": actor.detached,
                "pending_reason": actor.pending_reason,
                "death_reason": actor.death_reason,
                "priority": actor.priority,
                "preemptible": actor.preemptible,
                "preemptions": actor.preemptions,
                "placement_group": actor.placement_group_id,
            })
        })
        .collect();
    let jobs: Vec<Value> = status.jobs.iter().map(crate::jobs::to_json).collect();
    let (groups, policy, demand) = scheduling::to_json(status);
    json!({
        "nodes": nodes,
        "actors": actors,
        "jobs": jobs,
        "placement_groups": groups,
        "policy": policy,
        "pending_demand": demand,
        "autoscaler": autoscaler::to_json(status),
    })
}

fn to_table(status: &ClusterStatusReply) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "NODES");
    let _ = writeln!(
        out,
        "{:<22} {:<6} {:<22} {:>13} {:>17}  GPUS",
        "ID", "STATE", "ADDRESS", "CPU used/total", "MEM GiB used/total"
    );
    for node in &status.nodes {
        let total = node.total.clone().unwrap_or_default();
        let gpus: Vec<String> = node
            .gpus
            .iter()
            .map(|gpu| {
                let holders = if gpu.actor_ids.is_empty() {
                    "free".to_string()
                } else {
                    gpu.actor_ids.join("+")
                };
                format!(
                    "{}:{}({:.2} {holders})",
                    gpu.index,
                    gpu.model,
                    gpu.milli_used as f64 / 1000.0
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<22} {:<6} {:<22} {:>6.1}/{:<6.1} {:>8.1}/{:<8.1}  {}",
            node.id,
            if node.alive { "alive" } else { "dead" },
            node.address,
            node.cpu_milli_used as f64 / 1000.0,
            total.cpu_milli as f64 / 1000.0,
            node.memory_bytes_used as f64 / (1u64 << 30) as f64,
            total.memory_bytes as f64 / (1u64 << 30) as f64,
            if gpus.is_empty() {
                "-".to_string()
            } else {
                gpus.join(" ")
            },
        );
    }
    let _ = writeln!(out, "\nACTORS");
    let _ = writeln!(
        out,
        "{:<19} {:<16} {:<24} {:<10} {:<22} {:<8} {:>8}  NOTE",
        "ID", "NAME", "TYPE", "STATE", "NODE", "GPUS", "RESTARTS"
    );
    for actor in &status.actors {
        let type_short = actor
            .type_name
            .rsplit("::")
            .next()
            .unwrap_or(&actor.type_name);
        let gpus: Vec<String> = actor.gpus.iter().map(|gpu| gpu.index.to_string()).collect();
        let note = if !actor.pending_reason.is_empty() {
            actor.pending_reason.clone()
        } else if actor.state() == troupe_proto::ActorState::Alive {
            String::new()
        } else {
            actor.death_reason.lines().next().unwrap_or("").to_string()
        };
        let _ = writeln!(
            out,
            "{:<19} {:<16} {:<24} {:<10} {:<22} {:<8} {:>8}  {}",
            actor.id,
            if actor.name.is_empty() {
                "-"
            } else {
                &actor.name
            },
            type_short,
            state_name(actor.state()),
            if actor.node_id.is_empty() {
                "-"
            } else {
                &actor.node_id
            },
            if gpus.is_empty() {
                "-".to_string()
            } else {
                gpus.join(",")
            },
            actor.restarts,
            note,
        );
    }
    if !status.jobs.is_empty() {
        let _ = writeln!(out, "\nJOBS");
        out.push_str(&crate::jobs::table(&status.jobs));
    }
    out.push_str(&scheduling::to_table(status));
    out.push_str(&autoscaler::to_table(status));
    out
}
