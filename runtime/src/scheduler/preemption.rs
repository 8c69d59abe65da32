//! Preemption planning: which lower-priority, preemptible holders to evict so that a request
//! that fits nowhere can be placed. Victims are whole holders (a gang is never split), chosen
//! lowest priority first, then least GPU time lost; the plan is computed on the live state, by
//! running the placement that will follow it, and every trial change is undone before returning.

use super::resources::{fit_all, Request};
use super::strategy::Strategy;
use super::{Claim, NodeUsage, Scheduler, Victim};

/// Once one node has a workable victim set, this many more nodes are examined (in order of
/// their cheapest candidate) before the best set found is taken. Like Kubernetes' preemption,
/// which examines a bounded sample of nodes, this keeps a plan's cost independent of cluster
/// size; the first nodes visited are the likeliest to be cheapest.
const MORE_NODES_AFTER_FIRST_PLAN: usize = 100;

/// How bad evicting a set of victims is, compared lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Cost {
    highest_priority: i32,
    gpu_milli_seconds: f64,
    victims: usize,
}

impl Scheduler {
    /// The holders to evict so that `bundles` fit, or `None` when the greedy search (the
    /// cheapest eviction for each bundle the placement gets stuck on, in turn) finds no set of
    /// lower-priority preemptible holders that makes room. Nothing is changed.
    ///
    /// `bundles` fit when, once the victims are gone, the placement the caller then runs
    /// (`place_group`, or `place_lost_bundles` with the group's nodes as `avoid_nodes`) places
    /// them. The plan is therefore found by running that placement itself on the live state:
    /// a trial placement of its own could find room that the real one, choosing differently
    /// in the freed space, then misses, and the victims would be evicted for nothing.
    pub fn plan_preemption(
        &mut self,
        bundles: &[Request],
        strategy: Strategy,
        claim: Claim,
        now_s: f64,
        avoid_nodes: &[String],
    ) -> Option<Vec<String>> {
        if self.check_group_feasible(bundles, strategy).is_err() {
            return None;
        }
        let mut victims: Vec<String> = Vec::new();
        let ok =
            self.evict_until_placed(bundles, strategy, claim, now_s, avoid_nodes, &mut victims);
        if ok {
            self.spare_unneeded(bundles, strategy, avoid_nodes, &mut victims);
        }
        for victim in &victims {
            self.restore_after_trial(victim);
        }
        (ok && !victims.is_empty()).then_some(victims)
    }

    /// Runs the placement; each time it gets stuck, evicts (for the trial) the cheapest
    /// holders that make room for the stuck bundles in the state it reached, and runs it again
    /// from the start, as the freed room may draw earlier bundles away. Every round evicts
    /// someone new, so this ends. Whether it placed everything; the victims stay evicted.
    fn evict_until_placed(
        &mut self,
        bundles: &[Request],
        strategy: Strategy,
        claim: Claim,
        now_s: f64,
        avoid_nodes: &[String],
        victims: &mut Vec<String>,
    ) -> bool {
        let all: Vec<usize> = (0..bundles.len()).collect();
        loop {
            let stuck = match self.try_bundles(bundles, &all, strategy, avoid_nodes) {
                Ok(placed) => {
                    for (_, allocation) in &placed {
                        self.release(allocation);
                    }
                    return true;
                }
                Err(stuck) => stuck,
            };
            let wanted: Vec<Request> = stuck.bundles.iter().map(|i| bundles[*i].clone()).collect();
            let found = self.cheapest_eviction(&wanted, claim, now_s, &stuck.exclude, victims);
            for (_, allocation) in &stuck.placed {
                self.release(allocation);
            }
            let Some((_, more)) = found.filter(|(_, more)| !more.is_empty()) else {
                return false;
            };
            for victim in more {
                self.evict_for_trial(&victim);
                victims.push(victim);
            }
        }
    }

    /// Puts back, latest first, the victims the placement turns out not to need (a later
    /// round's eviction may have made an earlier one's useless).
    fn spare_unneeded(
        &mut self,
        bundles: &[Request],
        strategy: Strategy,
        avoid_nodes: &[String],
        victims: &mut Vec<String>,
    ) {
        let mut index = victims.len();
        while index > 0 {
            index -= 1;
            self.restore_after_trial(&victims[index]);
            if self.places_all(bundles, strategy, avoid_nodes) {
                victims.remove(index);
            } else {
                self.evict_for_trial(&victims[index]);
            }
        }
    }

    /// Whether the placement places every bundle now; undoes what it placed either way.
    fn places_all(
        &mut self,
        bundles: &[Request],
        strategy: Strategy,
        avoid_nodes: &[String],
    ) -> bool {
        let all: Vec<usize> = (0..bundles.len()).collect();
        let Ok(placed) = self.place_bundles(bundles, &all, strategy, avoid_nodes) else {
            return false;
        };
        for (_, allocation) in &placed {
            self.release(allocation);
        }
        true
    }

    /// The node where evicting the cheapest set of eligible holders lets all of `wanted` fit.
    /// Nodes are visited cheapest-candidate first and the scan stops once no later node can
    /// beat the best set found, so a plan rarely looks at more than a few nodes.
    fn cheapest_eviction(
        &mut self,
        wanted: &[Request],
        claim: Claim,
        now_s: f64,
        exclude: &[usize],
        already: &[String],
    ) -> Option<(usize, Vec<String>)> {
        let lost = |victim: &Victim| victim.gpu_milli as f64 * (now_s - victim.since_s).max(0.0);
        let eligible =
            |victim: &Victim| victim.priority < claim.priority && !already.contains(&victim.holder);
        let mut bounds: Vec<(i32, f64, usize)> = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(node) = slot.as_ref() else { continue };
            if !node.schedulable || exclude.contains(&index) {
                continue;
            }
            let pinned_elsewhere = wanted.iter().any(|request| {
                request
                    .node_affinity
                    .as_ref()
                    .is_some_and(|a| !a.soft && a.node_id != node.id)
            });
            if pinned_elsewhere {
                continue;
            }
            let mut bound: Option<(i32, f64)> = None;
            for victim in node.preemptible.iter().filter(|v| eligible(v)) {
                let (priority, cost) = bound.get_or_insert((victim.priority, lost(victim)));
                *priority = (*priority).min(victim.priority);
                *cost = cost.min(lost(victim));
            }
            if let Some((priority, cost)) = bound {
                bounds.push((priority, cost, index));
            }
        }
        bounds.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut best: Option<(Cost, usize, Vec<String>)> = None;
        let mut looked_after_first = 0;
        for (priority, cost, index) in bounds {
            if best.is_some() {
                looked_after_first += 1;
                if looked_after_first > MORE_NODES_AFTER_FIRST_PLAN {
                    break;
                }
            }
            let bound = Cost {
                highest_priority: priority,
                gpu_milli_seconds: cost,
                victims: 1,
            };
            if best.as_ref().is_some_and(|(found, _, _)| *found <= bound) {
                break;
            }
            let Some(node) = self.slots[index].as_ref() else {
                continue;
            };
            let mut candidates: Vec<&Victim> =
                node.preemptible.iter().filter(|v| eligible(v)).collect();
            candidates.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(lost(a).total_cmp(&lost(b)))
                    .then_with(|| a.holder.cmp(&b.holder))
            });
            if let Some((taken, count)) = self.evict_until_fits(index, wanted, &candidates) {
                let cost = Cost {
                    highest_priority: taken.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
                    gpu_milli_seconds: taken.iter().map(|v| lost(v)).sum(),
                    victims: count,
                };
                if best.as_ref().is_none_or(|(found, _, _)| cost < *found) {
                    let names = taken.iter().map(|v| v.holder.clone()).collect();
                    best = Some((cost, index, names));
                }
            }
        }
        best.map(|(_, slot, victims)| (slot, victims))
    }

    /// Takes `candidates` in order off a copy of the node's use until `wanted` fits, then puts
    /// back those not needed (costliest first). Returns the victims needed, or `None`.
    fn evict_until_fits<'v>(
        &self,
        slot: usize,
        wanted: &[Request],
        candidates: &[&'v Victim],
    ) -> Option<(Vec<&'v Victim>, usize)> {
        let node = self.slots[slot].as_ref()?;
        let capacity = &self.kinds[node.kind as usize];
        let here = |victim: &Victim| -> Vec<super::Allocation> {
            self.holders
                .get(&victim.holder)
                .map(|h| {
                    h.allocations
                        .iter()
                        .flatten()
                        .filter(|a| a.node_id == node.id)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut usage = node.usage.clone();
        let mut taken: Vec<&Victim> = Vec::new();
        let mut fits = false;
        for victim in candidates {
            for allocation in here(victim) {
                usage.remove(capacity, &allocation);
            }
            taken.push(victim);
            if fits_usage(capacity, &usage, wanted) {
                fits = true;
                break;
            }
        }
        if !fits {
            return None;
        }
        let mut index = taken.len();
        while index > 0 {
            index -= 1;
            let back = here(taken[index]);
            for allocation in &back {
                usage.add(capacity, allocation);
            }
            if fits_usage(capacity, &usage, wanted) {
                taken.remove(index);
            } else {
                for allocation in &back {
                    usage.remove(capacity, allocation);
                }
            }
        }
        let count = taken.len();
        Some((taken, count))
    }

    fn evict_for_trial(&mut self, holder: &str) {
        self.trial(holder, false);
    }

    fn restore_after_trial(&mut self, holder: &str) {
        self.trial(holder, true);
    }

    /// Takes a holder's allocations off the nodes (or puts them back), keeping its record.
    fn trial(&mut self, holder: &str, restore: bool) {
        let allocations: Vec<_> = self
            .holders
            .get(holder)
            .map(|h| h.allocations.iter().flatten().cloned().collect())
            .unwrap_or_default();
        for allocation in &allocations {
            if restore {
                self.reapply(allocation);
            } else {
                self.release(allocation);
            }
        }
    }
}

/// Whether all of `wanted` fit together on a node of `capacity` with `usage` in use.
pub(crate) fn fits_usage(
    capacity: &super::NodeCapacity,
    usage: &NodeUsage,
    wanted: &[Request],
) -> bool {
    let wanted: Vec<&Request> = wanted.iter().collect();
    fit_all(capacity, usage, &wanted).is_some()
}
