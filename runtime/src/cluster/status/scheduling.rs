//! The scheduling part of the cluster status's tables and JSON form: placement groups (state,
//! strategy, where each bundle went, why one waits), the placement policy, and pending demand
//! (what the cluster would need to place everything pending: the figure an autoscaler reads).

use serde_json::{json, Value};
use std::fmt::Write as _;
use troupe_proto::{ClusterStatusReply, PlacementGroupInfo, ResourceRequest};

fn group_state(group: &PlacementGroupInfo) -> String {
    group
        .state()
        .as_str_name()
        .trim_start_matches("PLACEMENT_GROUP_")
        .to_lowercase()
}

fn shape(resources: &ResourceRequest) -> String {
    let mut parts = vec![format!("{:.2} CPU", resources.cpu_milli as f64 / 1000.0)];
    if resources.gpu_milli > 0 {
        parts.push(format!("{:.2} GPU", resources.gpu_milli as f64 / 1000.0));
    }
    if resources.memory_bytes > 0 {
        parts.push(format!(
            "{:.1} GiB",
            resources.memory_bytes as f64 / (1u64 << 30) as f64
        ));
    }
    for (name, amount) in &resources.custom {
        parts.push(format!("{amount} {name}"));
    }
    parts.join(" ")
}

/// `placement_groups`, `policy` and `pending_demand` for the JSON form.
pub(super) fn to_json(status: &ClusterStatusReply) -> (Value, Value, Value) {
    let groups: Vec<Value> = status
        .placement_groups
        .iter()
        .map(|group| {
            json!({
                "id": group.id,
                "name": group.name,
                "state": group_state(group),
                "strategy": group.strategy,
                "priority": group.priority,
                "preemptible": group.preemptible,
                "reschedules": group.reschedules,
                "pending_reason": group.pending_reason,
                "bundles": group.bundles.iter().map(|bundle| json!({
                    "resources": shape(&bundle.resources.clone().unwrap_or_default()),
                    "node": bundle.node_id,
                    "gpus": bundle.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let demand = status.pending_demand.clone().unwrap_or_default();
    let demand = json!({
        "cpus": demand.cpu_milli as f64 / 1000.0,
        "gpus": demand.gpu_milli as f64 / 1000.0,
        "memory_bytes": demand.memory_bytes,
        "shapes": demand.shapes.iter().map(|s| json!({
            "resources": shape(&s.resources.clone().unwrap_or_default()),
            "cpu_milli": s.resources.as_ref().map_or(0, |r| r.cpu_milli),
            "gpu_milli": s.resources.as_ref().map_or(0, |r| r.gpu_milli),
            "memory_bytes": s.resources.as_ref().map_or(0, |r| r.memory_bytes),
            "count": s.count,
        })).collect::<Vec<_>>(),
    });
    (Value::Array(groups), json!(status.policy), demand)
}

/// The PLACEMENT GROUPS and PENDING DEMAND tables (empty when there is nothing to show).
pub(super) fn to_table(status: &ClusterStatusReply) -> String {
    let mut out = String::new();
    if !status.placement_groups.is_empty() {
        let _ = writeln!(out, "\nPLACEMENT GROUPS");
        let _ = writeln!(
            out,
            "{:<19} {:<16} {:<13} {:<13} {:>8}  BUNDLES / NOTE",
            "ID", "NAME", "STATE", "STRATEGY", "PRIORITY"
        );
        for group in &status.placement_groups {
            let bundles: Vec<String> = group
                .bundles
                .iter()
                .map(|b| {
                    let node = if b.node_id.is_empty() {
                        "-"
                    } else {
                        &b.node_id
                    };
                    format!(
                        "[{}]@{node}",
                        shape(&b.resources.clone().unwrap_or_default())
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<19} {:<16} {:<13} {:<13} {:>8}  {}{}",
                group.id,
                if group.name.is_empty() {
                    "-"
                } else {
                    &group.name
                },
                group_state(group),
                group.strategy,
                group.priority,
                bundles.join(" "),
                if group.pending_reason.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", group.pending_reason)
                },
            );
        }
    }
    let demand = status.pending_demand.clone().unwrap_or_default();
    if !demand.shapes.is_empty() {
        let _ = writeln!(
            out,
            "\nPENDING DEMAND (to add for everything pending to fit; policy {}): {:.2} CPU, {:.2} GPU, {:.1} GiB",
            status.policy,
            demand.cpu_milli as f64 / 1000.0,
            demand.gpu_milli as f64 / 1000.0,
            demand.memory_bytes as f64 / (1u64 << 30) as f64
        );
        for item in &demand.shapes {
            let _ = writeln!(
                out,
                "  {} x [{}]",
                item.count,
                shape(&item.resources.clone().unwrap_or_default())
            );
        }
    }
    out
}
