//! `troupe status`: nodes (state, resources, each GPU and who holds it), actors (with why a
//! pending one waits), jobs, placement groups and pending demand, as tables or as one JSON object
//! for scripts.

use anyhow::Context;
use serde_json::{json, Value};
use std::fmt::Write as _;
use troupe_proto::cluster_client::ClusterClient;
use troupe_proto::{ClusterStatusReply, Empty};

/// Asks the head at `address` for the cluster status.
pub(super) async fn fetch(
    address: &str,
    token: &crate::rpc::Token,
) -> anyhow::Result<ClusterStatusReply> {
    let channel = crate::rpc::connect(address, token)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut client = ClusterClient::new(channel);
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), client.status(Empty {}))
        .await
        .context("the head did not answer within 10 s")?
        .map_err(|status| anyhow::anyhow!("the head refused: {}", status.message()))?;
    Ok(reply.into_inner())
}

/// Fails with the reason when `address` is not `host:port` (before any token is looked for).
pub(super) fn checked(address: String) -> anyhow::Result<String> {
    crate::rpc::normalize_address(&address).map_err(anyhow::Error::msg)?;
    Ok(address)
}

pub(super) fn head_address(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(address) = flag {
        return Ok(address);
    }
    if let Ok(address) = std::env::var("TROUPE_ADDRESS") {
        return Ok(address);
    }
    if let Some(state) = super::up::read_state(&super::up::state_dir(None)) {
        return Ok(state.head_address);
    }
    anyhow::bail!(
        "no head address: pass --head, set TROUPE_ADDRESS, or start a cluster with `troupe up`"
    )
}

pub(super) async fn show(head: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let address = checked(head_address(head)?)?;
    let token = crate::rpc::Token::from_env()
        .with_context(|| format!("connecting to the cluster at {address}"))?;
    let status = fetch(&address, &token)
        .await
        .with_context(|| format!("reading the status of the cluster at {address}"))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&to_json(&status))?);
    } else {
        print!("{}", to_table(&status));
    }
    Ok(())
}

fn state_name(state: troupe_proto::ActorState) -> String {
    state
        .as_str_name()
        .trim_start_matches("ACTOR_STATE_")
        .to_lowercase()
}

/// The JSON form: `{"nodes": [...], "actors": [...]}`.
pub fn to_json(status: &ClusterStatusReply) -> Value {
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
    let jobs: Vec<Value> = status.jobs.iter().map(super::job::to_json).collect();
    let (groups, policy, demand) = super::status_scheduling::to_json(status);
    json!({
        "nodes": nodes,
        "actors": actors,
        "jobs": jobs,
        "placement_groups": groups,
        "policy": policy,
        "pending_demand": demand,
    })
}

/// The table form.
pub fn to_table(status: &ClusterStatusReply) -> String {
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
        out.push_str(&super::job::table(&status.jobs));
    }
    out.push_str(&super::status_scheduling::to_table(status));
    out
}
