//! Placement groups and holders. Every tracked placement belongs to a holder (an actor, a job
//! or a placement group) with a priority; a holder's bundles are placed all together or not at
//! all under one of four strategies, released all at once, and, when a node dies, its lost
//! bundles wait to be placed again.

use super::resources::{fit_all, Allocation, Request};
use super::strategy::Strategy;
use super::{PlacementError, Scheduler, SearchRules};
use std::collections::BTreeSet;

/// Who holds a placement, and how much they matter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// Higher runs first and may preempt lower.
    pub priority: i32,
    /// Whether higher-priority work may evict it.
    pub preemptible: bool,
    /// When it was placed, in the caller's clock (seconds); used to weigh GPU time lost.
    pub since_s: f64,
}

impl Default for Claim {
    fn default() -> Self {
        Self {
            priority: 0,
            preemptible: false,
            since_s: 0.0,
        }
    }
}

/// Where placing a group's bundles stopped.
pub(super) struct Stuck {
    /// The bundles that found no room: one, or all of a STRICT_PACK group.
    pub bundles: Vec<usize>,
    /// Nodes the strategy kept them off (STRICT_SPREAD: the group's other nodes).
    pub exclude: Vec<usize>,
    /// The bundles placed before them, still committed.
    pub placed: Vec<(usize, Allocation)>,
    pub error: PlacementError,
}

/// One tracked holder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Holder {
    pub claim: Claim,
    pub strategy: Strategy,
    pub bundles: Vec<Request>,
    /// Per bundle; `None` once its node died, until placed again.
    pub allocations: Vec<Option<Allocation>>,
}

impl Holder {
    /// Milli-GPU held right now.
    pub fn gpu_milli(&self) -> u64 {
        self.allocations
            .iter()
            .flatten()
            .map(|a| a.gpus.iter().map(|g| g.milli).sum::<u64>())
            .sum()
    }
}

impl Scheduler {
    /// Places every bundle of a holder or none, records them under `holder`, and returns one
    /// allocation per bundle (in bundle order). A holder id already in use is refused.
    pub fn place_group(
        &mut self,
        holder: &str,
        bundles: &[Request],
        strategy: Strategy,
        claim: Claim,
    ) -> Result<Vec<Allocation>, PlacementError> {
        if self.holders.contains_key(holder) {
            return Err(PlacementError::Infeasible(format!(
                "{holder} already holds resources"
            )));
        }
        self.check_group_feasible(bundles, strategy)?;
        let missing: Vec<usize> = (0..bundles.len()).collect();
        let placed = self.place_bundles(bundles, &missing, strategy, &[])?;
        let mut allocations = vec![None; bundles.len()];
        for (index, allocation) in placed {
            allocations[index] = Some(allocation);
        }
        let holder_record = super::groups::Holder {
            claim,
            strategy,
            bundles: bundles.to_vec(),
            allocations,
        };
        self.track(holder, holder_record);
        Ok(self.holders[holder]
            .allocations
            .iter()
            .flatten()
            .cloned()
            .collect())
    }

    /// Places the bundles a holder lost when a node died, keeping its strategy against the
    /// bundles it still has. Returns (bundle index, allocation) for each.
    pub fn place_lost_bundles(
        &mut self,
        holder: &str,
    ) -> Result<Vec<(usize, Allocation)>, PlacementError> {
        let missing = self.lost_bundles(holder);
        self.place_again(holder, &missing)
    }

    /// Places one lost (or given back) bundle of a holder again.
    pub fn place_lost_bundle(
        &mut self,
        holder: &str,
        bundle: usize,
    ) -> Result<Allocation, PlacementError> {
        if let Some(Some(allocation)) = self
            .holders
            .get(holder)
            .and_then(|record| record.allocations.get(bundle))
        {
            return Ok(allocation.clone());
        }
        let mut placed = self.place_again(holder, &[bundle])?;
        Ok(placed.remove(0).1)
    }

    /// Places bundles `which` of a holder (all or none) next to the bundles it still holds.
    fn place_again(
        &mut self,
        holder: &str,
        which: &[usize],
    ) -> Result<Vec<(usize, Allocation)>, PlacementError> {
        let Some(record) = self.holders.get(holder) else {
            return Err(PlacementError::Infeasible(format!(
                "{holder} holds nothing"
            )));
        };
        if let Some(bad) = which.iter().find(|i| **i >= record.bundles.len()) {
            return Err(PlacementError::Infeasible(format!(
                "{holder} has no bundle {bad}"
            )));
        }
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let kept: Vec<String> = record
            .allocations
            .iter()
            .flatten()
            .map(|a| a.node_id.clone())
            .collect();
        let bundles = record.bundles.clone();
        let strategy = record.strategy;
        let placed = self.place_bundles(&bundles, which, strategy, &kept)?;
        if let Some(record) = self.holders.get_mut(holder) {
            for (index, allocation) in &placed {
                record.allocations[*index] = Some(allocation.clone());
            }
        }
        self.holder_changed(holder);
        self.index_holder(holder);
        Ok(placed)
    }

    /// Gives back one bundle of a holder (a gang member that died); the holder keeps its other
    /// bundles and may get this one back with `place_lost_bundles`.
    pub fn release_bundle(&mut self, holder: &str, bundle: usize) -> Option<Allocation> {
        let allocation = self
            .holders
            .get_mut(holder)?
            .allocations
            .get_mut(bundle)?
            .take()?;
        self.holder_changed(holder);
        self.release(&allocation);
        let still_there = self.holders.get(holder).is_some_and(|record| {
            record
                .allocations
                .iter()
                .flatten()
                .any(|a| a.node_id == allocation.node_id)
        });
        if !still_there {
            if let Some(&index) = self.index_of.get(&allocation.node_id) {
                if let Some(slot) = self.slots[index].as_mut() {
                    slot.holders.remove(holder);
                    slot.preemptible.retain(|victim| victim.holder != holder);
                }
            }
        }
        Some(allocation)
    }

    /// Bundle indexes a holder lost (its node died) and has not got back yet.
    pub fn lost_bundles(&self, holder: &str) -> Vec<usize> {
        self.holders
            .get(holder)
            .map(|record| {
                (0..record.allocations.len())
                    .filter(|i| record.allocations[*i].is_none())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Frees everything a holder has, at once; returns what it held.
    pub fn release_holder(&mut self, holder: &str) -> Vec<Allocation> {
        let Some(record) = self.holders.remove(holder) else {
            return Vec::new();
        };
        self.holder_changed(holder);
        let allocations: Vec<Allocation> = record.allocations.into_iter().flatten().collect();
        for allocation in &allocations {
            self.release(allocation);
            if let Some(&slot) = self.index_of.get(&allocation.node_id) {
                if let Some(slot) = self.slots[slot].as_mut() {
                    slot.holders.remove(holder);
                    slot.preemptible.retain(|victim| victim.holder != holder);
                }
            }
        }
        allocations
    }

    /// The allocations a holder has now, by bundle (`None`: lost with its node).
    pub fn holder_allocations(&self, holder: &str) -> Option<Vec<Option<Allocation>>> {
        self.holders.get(holder).map(|h| h.allocations.clone())
    }

    pub fn holder_claim(&self, holder: &str) -> Option<Claim> {
        self.holders.get(holder).map(|h| h.claim)
    }

    /// Every holder id, in order.
    pub fn holder_ids(&self) -> Vec<String> {
        self.holders.keys().cloned().collect()
    }

    /// Registers an already placed holder and its nodes.
    pub(crate) fn track(&mut self, holder: &str, record: Holder) {
        self.holders.insert(holder.to_string(), record);
        self.holder_changed(holder);
        self.index_holder(holder);
    }

    /// One holder's record, for the head's durable copy.
    pub(crate) fn holder(&self, holder: &str) -> Option<&Holder> {
        self.holders.get(holder)
    }

    /// From now on, remembers which holders change (`take_changed_holders`).
    pub(crate) fn track_holder_changes(&mut self) {
        self.changed_holders.get_or_insert_with(BTreeSet::new);
    }

    /// The holders changed since the last call (empty unless `track_holder_changes` was called).
    pub(crate) fn take_changed_holders(&mut self) -> BTreeSet<String> {
        match self.changed_holders.as_mut() {
            Some(changed) => std::mem::take(changed),
            None => BTreeSet::new(),
        }
    }

    pub(super) fn holder_changed(&mut self, holder: &str) {
        if let Some(changed) = self.changed_holders.as_mut() {
            changed.insert(holder.to_string());
        }
    }

    /// Takes back a holder read from the head's records after a restart: its allocations on
    /// nodes the scheduler knows are reserved again exactly as they were; those on other nodes
    /// count as lost bundles (placed again like those of a dead node).
    pub(crate) fn restore_holder(&mut self, holder: &str, mut record: Holder) {
        for allocation in record.allocations.iter_mut() {
            match allocation {
                Some(kept) if self.index_of.contains_key(&kept.node_id) => self.reapply(kept),
                _ => *allocation = None,
            }
        }
        self.track(holder, record);
    }

    /// Lists `holder` on every node it has a bundle on (and, if preemptible, among the node's
    /// possible victims, with its current GPU total).
    fn index_holder(&mut self, holder: &str) {
        let Some(record) = self.holders.get(holder) else {
            return;
        };
        let victim = record.claim.preemptible.then(|| super::Victim {
            holder: holder.to_string(),
            priority: record.claim.priority,
            since_s: record.claim.since_s,
            gpu_milli: record.gpu_milli(),
        });
        let nodes: BTreeSet<usize> = record
            .allocations
            .iter()
            .flatten()
            .filter_map(|a| self.index_of.get(&a.node_id).copied())
            .collect();
        for index in nodes {
            if let Some(slot) = self.slots[index].as_mut() {
                slot.holders.insert(holder.to_string());
                slot.preemptible.retain(|v| v.holder != holder);
                if let Some(victim) = &victim {
                    slot.preemptible.push(victim.clone());
                }
            }
        }
    }

    /// A group no cluster state could hold fails here with the reason.
    pub fn check_group_feasible(
        &self,
        bundles: &[Request],
        strategy: Strategy,
    ) -> Result<(), PlacementError> {
        if bundles.is_empty() {
            return Err(PlacementError::Infeasible(
                "a placement group needs at least one bundle".to_string(),
            ));
        }
        for (index, bundle) in bundles.iter().enumerate() {
            self.check_feasible(bundle).map_err(|err| match err {
                PlacementError::Infeasible(why) => {
                    PlacementError::Infeasible(format!("bundle {index}: {why}"))
                }
                other => other,
            })?;
        }
        if strategy == Strategy::StrictSpread && bundles.len() > self.node_count() {
            return Err(PlacementError::Infeasible(format!(
                "STRICT_SPREAD needs {} nodes, the cluster has {}",
                bundles.len(),
                self.node_count()
            )));
        }
        if strategy == Strategy::StrictPack && !self.some_empty_node_holds_all(bundles) {
            return Err(PlacementError::Infeasible(
                "STRICT_PACK: no node, even empty, holds all bundles together".to_string(),
            ));
        }
        Ok(())
    }

    fn some_empty_node_holds_all(&self, bundles: &[Request]) -> bool {
        let wanted: Vec<&Request> = bundles.iter().collect();
        self.live_kinds().into_iter().any(|kind| {
            let capacity = &self.kinds[kind as usize];
            fit_all(capacity, &super::NodeUsage::empty(capacity), &wanted).is_some()
        })
    }

    /// Places the bundles listed in `which` (all or none), biggest first, under `strategy`;
    /// `kept_nodes` are nodes the group already holds bundles on.
    pub(super) fn place_bundles(
        &mut self,
        bundles: &[Request],
        which: &[usize],
        strategy: Strategy,
        kept_nodes: &[String],
    ) -> Result<Vec<(usize, Allocation)>, PlacementError> {
        self.try_bundles(bundles, which, strategy, kept_nodes)
            .map_err(|stuck| {
                for (_, allocation) in &stuck.placed {
                    self.release(allocation);
                }
                stuck.error
            })
    }

    /// `place_bundles` without the undoing: when a bundle finds no room, what was placed before
    /// it stays committed in the `Stuck`, so that preemption planning can look for room for
    /// that bundle in the very state this placement reached (see `plan_preemption`).
    pub(super) fn try_bundles(
        &mut self,
        bundles: &[Request],
        which: &[usize],
        strategy: Strategy,
        kept_nodes: &[String],
    ) -> Result<Vec<(usize, Allocation)>, Stuck> {
        if strategy == Strategy::StrictPack {
            return self
                .place_strict_pack(bundles, which, kept_nodes)
                .map_err(|error| self.stuck_strict_pack(which, kept_nodes, error));
        }
        let mut order = which.to_vec();
        order.sort_by_key(|i| {
            std::cmp::Reverse((
                bundles[*i].gpu_milli,
                bundles[*i].cpu_milli,
                bundles[*i].memory_bytes,
            ))
        });
        let mut used: BTreeSet<usize> = kept_nodes
            .iter()
            .filter_map(|id| self.index_of.get(id).copied())
            .collect();
        let mut placed: Vec<(usize, Allocation)> = Vec::new();
        for index in order {
            let used_list: Vec<usize> = used.iter().copied().collect();
            let adjust: Vec<(usize, f64)> = match strategy {
                Strategy::Pack => used_list.iter().map(|n| (*n, -1e12)).collect(),
                Strategy::Spread => used_list.iter().map(|n| (*n, 1e12)).collect(),
                _ => Vec::new(),
            };
            let exclude: &[usize] = if strategy == Strategy::StrictSpread {
                &used_list
            } else {
                &[]
            };
            let rules = SearchRules {
                exclude,
                adjust: &adjust,
            };
            match self.choose(&bundles[index], &rules) {
                Ok(choice) => {
                    used.insert(choice.slot);
                    let allocation = self.commit(choice, &bundles[index]);
                    placed.push((index, allocation));
                }
                Err(err) => {
                    return Err(Stuck {
                        bundles: vec![index],
                        exclude: exclude.to_vec(),
                        placed,
                        error: bundle_error(bundles.len(), index, err),
                    });
                }
            }
        }
        placed.sort_by_key(|(index, _)| *index);
        Ok(placed)
    }

    /// A STRICT_PACK group that found no node: all its bundles want room together, and on the
    /// node it already holds, if any.
    fn stuck_strict_pack(
        &self,
        which: &[usize],
        kept_nodes: &[String],
        error: PlacementError,
    ) -> Stuck {
        let exclude = match kept_nodes.first() {
            Some(node) => {
                let kept = self.index_of.get(node).copied();
                (0..self.slots.len()).filter(|i| Some(*i) != kept).collect()
            }
            None => Vec::new(),
        };
        Stuck {
            bundles: which.to_vec(),
            exclude,
            placed: Vec::new(),
            error,
        }
    }

    /// All bundles on one node: every candidate node (one per class, or the node the group
    /// already holds) is tried on a copy of its use, and only the best is committed.
    fn place_strict_pack(
        &mut self,
        bundles: &[Request],
        which: &[usize],
        kept_nodes: &[String],
    ) -> Result<Vec<(usize, Allocation)>, PlacementError> {
        let candidates: Vec<(usize, usize)> = match kept_nodes.first() {
            Some(node) => self
                .index_of
                .get(node)
                .map(|i| (*i, 1))
                .into_iter()
                .collect(),
            None => {
                let mut reps: Vec<(usize, usize)> = self
                    .classes
                    .values()
                    .filter_map(|members| members.iter().next().map(|i| (*i, members.len())))
                    .collect();
                reps.sort_unstable();
                reps
            }
        };
        let wanted: Vec<&Request> = which.iter().map(|i| &bundles[*i]).collect();
        // A bundle pinned (hard) to a node makes that node the only candidate.
        let pinned: Vec<usize> = wanted
            .iter()
            .filter_map(|r| r.node_affinity.as_ref().filter(|a| !a.soft))
            .filter_map(|a| self.index_of.get(&a.node_id).copied())
            .collect();
        let pins_unknown_node = wanted
            .iter()
            .filter_map(|r| r.node_affinity.as_ref().filter(|a| !a.soft))
            .count()
            > pinned.len();
        let candidates: Vec<(usize, usize)> = candidates
            .into_iter()
            .filter(|(slot, _)| {
                !pins_unknown_node
                    && pinned.iter().all(|p| p == slot)
                    && self.slots[*slot].as_ref().is_some_and(|n| n.schedulable)
            })
            .collect();
        // Necessary conditions, checked before the exact (and costlier) trial on each node.
        let need_cpu: u64 = wanted.iter().map(|r| r.cpu_milli).sum();
        let need_memory: u64 = wanted.iter().map(|r| r.memory_bytes).sum();
        let need_gpu: u64 = wanted.iter().map(|r| r.gpu_milli).sum();
        let need_whole: usize = wanted.iter().map(|r| r.whole_gpus()).sum();
        let mut best: Option<(f64, usize, Vec<Vec<super::GpuShare>>)> = None;
        let Self {
            kinds,
            slots,
            policy,
            ..
        } = self;
        for (slot, members) in candidates {
            let Some(node) = slots[slot].as_ref() else {
                continue;
            };
            let capacity = &kinds[node.kind as usize];
            let idle = node
                .usage
                .gpu_milli
                .iter()
                .filter(|used| **used == 0)
                .count();
            if capacity.cpu_milli.saturating_sub(node.usage.cpu_milli) < need_cpu
                || capacity
                    .memory_bytes
                    .saturating_sub(node.usage.memory_bytes)
                    < need_memory
                || node.usage.free_gpu_milli() < need_gpu
                || idle < need_whole
            {
                continue;
            }
            let Some((usage, devices)) = fit_all(capacity, &node.usage, &wanted) else {
                continue;
            };
            let before = super::policy::NodeView {
                kind: node.kind,
                capacity,
                usage: &node.usage,
                members,
            };
            let after = super::policy::NodeView {
                usage: &usage,
                ..before
            };
            let score = policy.score(&before, &after);
            if best.as_ref().is_none_or(|(found, _, _)| score < *found) {
                best = Some((score, slot, devices));
            }
        }
        let Some((_, slot, devices)) = best else {
            return Err(PlacementError::Busy(format!(
                "STRICT_PACK: no node has room for all {} bundles together",
                which.len()
            )));
        };
        let mut placed = Vec::with_capacity(which.len());
        for (index, gpus) in which.iter().zip(devices) {
            let choice = super::Choice { slot, gpus };
            placed.push((*index, self.commit(choice, &bundles[*index])));
        }
        Ok(placed)
    }
}

fn bundle_error(count: usize, index: usize, err: PlacementError) -> PlacementError {
    if count == 1 {
        return err;
    }
    match err {
        PlacementError::Busy(why) => {
            PlacementError::Busy(format!("bundle {index} of {count}: {why}"))
        }
        PlacementError::Infeasible(why) => {
            PlacementError::Infeasible(format!("bundle {index} of {count}: {why}"))
        }
    }
}
