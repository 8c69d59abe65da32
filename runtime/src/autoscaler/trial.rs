//! The planner's trial on the live scheduler: nodes it adds and allocations it makes while it
//! plans, all undone afterwards; and the two measures it takes there (how much of a set fits,
//! and how well copies of a request fill a node type).

use super::planner::PendingSet;
use crate::scheduler::{Allocation, NodeCapacity, Request, Scheduler};

/// Trial nodes' ids start with this (no node agent's id does).
const TRIAL_PREFIX: &str = "\u{1}planned-";

/// The share of an empty node of `capacity` (its GPUs, or its CPU for work without GPUs) that
/// copies of `request` would fill.
pub(super) fn fill_share(capacity: &NodeCapacity, request: &Request) -> f64 {
    let mut probe = Scheduler::new();
    probe.add_node("probe", capacity.clone());
    for _ in 0..256 {
        if probe.place(request).is_err() {
            break;
        }
    }
    let usage = probe.usage("probe").unwrap_or_default();
    if request.gpu_milli > 0 && !capacity.gpus.is_empty() {
        usage.gpu_milli.iter().sum::<u64>() as f64 / (capacity.gpus.len() as f64 * 1000.0)
    } else if capacity.cpu_milli > 0 {
        usage.cpu_milli as f64 / capacity.cpu_milli as f64
    } else {
        0.0
    }
}

/// How many of the set's bundles, from the first, fit now (all or nothing per prefix, under the
/// set's strategy).
pub(super) fn placeable_prefix(scheduler: &mut Scheduler, set: &PendingSet) -> usize {
    let (placed, allocations) = placeable_prefix_with(scheduler, set);
    for allocation in &allocations {
        scheduler.release(allocation);
    }
    placed
}

/// The longest placeable prefix and its allocations (still held), by binary search.
pub(super) fn placeable_prefix_with(
    scheduler: &mut Scheduler,
    set: &PendingSet,
) -> (usize, Vec<Allocation>) {
    if let Ok(all) = scheduler.place_all(&set.bundles, set.strategy) {
        return (set.bundles.len(), all);
    }
    let (mut low, mut high) = (0usize, set.bundles.len() - 1); // low fits, high+1 does not
    let mut best: Vec<Allocation> = Vec::new();
    while low < high {
        let mid = (low + high).div_ceil(2);
        match scheduler.place_all(&set.bundles[..mid], set.strategy) {
            Ok(allocations) => {
                for allocation in &allocations {
                    scheduler.release(allocation);
                }
                low = mid;
            }
            Err(_) => high = mid - 1,
        }
    }
    if low > 0 {
        best = scheduler
            .place_all(&set.bundles[..low], set.strategy)
            .unwrap_or_default();
    }
    (low, best)
}

/// Trial nodes and allocations, undone at the end of a round.
#[derive(Default)]
pub(super) struct Trial {
    nodes: Vec<String>,
    pub(super) allocations: Vec<Allocation>,
    next: u64,
}

impl Trial {
    pub(super) fn add_node(&mut self, scheduler: &mut Scheduler, capacity: NodeCapacity) -> String {
        self.next += 1;
        let id = format!("{TRIAL_PREFIX}{}", self.next);
        scheduler.add_node(&id, capacity);
        self.nodes.push(id.clone());
        id
    }

    pub(super) fn remove_node(&mut self, scheduler: &mut Scheduler, id: &str) {
        self.allocations.retain(|a| a.node_id != id);
        scheduler.remove_node(id);
        self.nodes.retain(|n| n != id);
    }

    pub(super) fn undo(&mut self, scheduler: &mut Scheduler) {
        for allocation in std::mem::take(&mut self.allocations) {
            scheduler.release(&allocation);
        }
        for id in std::mem::take(&mut self.nodes) {
            scheduler.remove_node(&id);
        }
    }
}
