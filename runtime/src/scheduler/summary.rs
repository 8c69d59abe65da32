//! Turning per-node shortfalls into one sentence: why a request is infeasible, or which
//! resource a waiting request is short of (shown in `troupe status`).

use super::resources::Shortfall;

/// "no node could ever hold it: ..." from the shortfall of each node kind (with its node count).
pub(crate) fn infeasible(reasons: &[(Shortfall, usize)]) -> String {
    if reasons.is_empty() {
        return "no schedulable node".to_string();
    }
    format!("no node could ever hold it ({})", by_resource(reasons))
}

/// "short of GPU on 12 nodes (e.g. ...), CPU on 3 nodes (e.g. ...)".
pub(crate) fn busy(reasons: &[(Shortfall, usize)]) -> String {
    if reasons.is_empty() {
        return "no schedulable node".to_string();
    }
    format!("short of {}", by_resource(reasons))
}

fn by_resource(reasons: &[(Shortfall, usize)]) -> String {
    let mut groups: Vec<(String, usize, &Shortfall)> = Vec::new();
    for (shortfall, nodes) in reasons {
        let resource = shortfall.resource();
        match groups.iter_mut().find(|(name, _, _)| *name == resource) {
            Some((_, count, _)) => *count += nodes,
            None => groups.push((resource, *nodes, shortfall)),
        }
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups
        .iter()
        .map(|(resource, nodes, example)| {
            let plural = if *nodes == 1 { "" } else { "s" };
            format!("{resource} on {nodes} node{plural} (e.g. {example})")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
