//! The autoscaler's part of `troupe status`: each launched node's phase (requested, launching,
//! backing-off, failed, running, idle, draining, stopping) with how long and why, why waiting
//! work launches nothing, the latest decisions and the counters.

use serde_json::{json, Value};
use std::fmt::Write as _;
use troupe_proto::ClusterStatusReply;

pub(super) fn to_json(status: &ClusterStatusReply) -> Value {
    let Some(a) = &status.autoscaler else {
        return Value::Null;
    };
    let nodes: Vec<Value> = a
        .nodes
        .iter()
        .map(|n| {
            json!({
                "launch_id": n.launch_id, "node_type": n.node_type, "phase": n.phase,
                "node_id": n.node_id, "for_s": n.for_s, "reason": n.reason, "attempts": n.attempts,
            })
        })
        .collect();
    json!({
        "provider": a.provider,
        "nodes": nodes,
        "waiting": a.waiting,
        "decisions": a.decisions,
        "launches": a.launches,
        "terminations": a.terminations,
        "launch_failures": a.launch_failures,
    })
}

pub(super) fn to_table(status: &ClusterStatusReply) -> String {
    let mut out = String::new();
    let Some(a) = &status.autoscaler else {
        return out;
    };
    let _ = writeln!(
        out,
        "\nAUTOSCALER ({} provider: {} launched, {} stopped, {} failed tries)",
        a.provider, a.launches, a.terminations, a.launch_failures
    );
    let _ = writeln!(
        out,
        "{:<28} {:<18} {:<12} {:<22} {:>8}  why",
        "launch", "type", "phase", "node", "for"
    );
    for n in &a.nodes {
        let _ = writeln!(
            out,
            "{:<28} {:<18} {:<12} {:<22} {:>7.0}s  {}",
            n.launch_id, n.node_type, n.phase, n.node_id, n.for_s, n.reason
        );
    }
    for why in &a.waiting {
        let _ = writeln!(out, "waiting: {why}");
    }
    for decision in a.decisions.iter().rev().take(10).rev() {
        let _ = writeln!(out, "decided: {decision}");
    }
    out
}
