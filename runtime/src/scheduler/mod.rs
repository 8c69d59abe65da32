//! Placement decisions: which node, and which GPU devices on it, a request goes to.
//!
//! Pure on purpose: no I/O, no async, no clocks (callers pass the time), so that the head calls
//! it under its lock and simulations and property tests drive it directly. It owns the resource
//! model (CPU in milli-cores, memory in bytes, each GPU device in milli-GPU with its model,
//! custom resources, node labels), the bookkeeping of what is allocated where and to whom,
//! placement groups, preemption planning and pending demand.
//!
//! Nodes in exactly the same state (same capacity and labels, same use) form a class and are
//! scored once per decision, so a decision costs what the number of distinct states costs, not
//! the number of nodes: 10,000 identical machines are one candidate until work tells them apart.

mod demand;
mod fragmentation;
mod groups;
pub mod policy;
mod preemption;
mod queue;
mod resources;
mod strategy;
mod summary;

pub use demand::{Demand, DemandItem};
pub use fragmentation::FragmentationAware;
pub use groups::Claim;
pub use policy::PlacementPolicy;
pub use queue::{Pass, PendingQueue, QueueKey};
pub use resources::{
    Allocation, GpuDevice, GpuShare, NodeAffinity, NodeCapacity, NodeUsage, Request, Shortfall,
};
pub use strategy::Strategy;

pub(crate) use groups::Holder;
use policy::{BestFit, GpuPacking, NodeView, RandomPolicy};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The policies `by_name` knows, default first.
pub const POLICY_NAMES: &[&str] = &["fragmentation", "fgd", "best-fit", "gpu-packing", "random"];

/// The policy called `name`, or `None`.
pub fn by_name(name: &str, seed: u64) -> Option<Box<dyn PlacementPolicy>> {
    Some(match name {
        "fragmentation" => Box::new(FragmentationAware::default()),
        "fgd" => Box::new(FragmentationAware::default().without_stranding()),
        "best-fit" => Box::new(BestFit),
        "gpu-packing" => Box::new(GpuPacking),
        "random" => Box::new(RandomPolicy::new(seed)),
        _ => return None,
    })
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// No node, even empty, could ever hold it.
    #[error("infeasible: {0}")]
    Infeasible(String),
    /// Some node could hold it once resources are freed.
    #[error("waiting for resources: {0}")]
    Busy(String),
}

/// Which nodes are interchangeable right now: same kind, same use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    kind: u32,
    cpu_milli: u64,
    memory_bytes: u64,
    /// Per-device use; sorted when all devices are of one model (their order does not matter).
    gpus: Vec<u64>,
    custom: Vec<(String, u64)>,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone)]
struct NodeSlot {
    id: String,
    kind: u32,
    usage: NodeUsage,
    schedulable: bool,
    class: ClassKey,
    /// Holders with at least one bundle here.
    holders: BTreeSet<String>,
    /// The preemptible ones among them, as preemption planning needs them.
    preemptible: Vec<Victim>,
}

/// A preemptible holder with a bundle on a node.
#[derive(Debug, Clone)]
struct Victim {
    holder: String,
    priority: i32,
    since_s: f64,
    /// Milli-GPU the holder has over all its nodes.
    gpu_milli: u64,
}

/// The best placement found for one request.
struct Choice {
    slot: usize,
    gpus: Vec<GpuShare>,
}

/// Extra rules for one search: nodes to skip, and nodes whose score is shifted (a placement
/// group's PACK and SPREAD preferences, a soft node affinity).
#[derive(Default)]
struct SearchRules<'a> {
    exclude: &'a [usize],
    adjust: &'a [(usize, f64)],
}

/// The cluster's resources and allocations, keyed by node id.
pub struct Scheduler {
    kinds: Vec<NodeCapacity>,
    kind_index: HashMap<String, u32>,
    /// Live nodes of each kind.
    kind_nodes: Vec<usize>,
    slots: Vec<Option<NodeSlot>>,
    free_slots: Vec<usize>,
    index_of: HashMap<String, usize>,
    classes: HashMap<ClassKey, BTreeSet<usize>>,
    policy: Box<dyn PlacementPolicy>,
    holders: BTreeMap<String, Holder>,
    /// Holders changed since the last `take_changed_holders` (None: not tracked, as in the
    /// simulator; the head tracks them to keep its records on disk).
    changed_holders: Option<BTreeSet<String>>,
    /// Milli-GPU allocated and offered over all nodes, kept up to date on every change.
    gpu_used_milli: u64,
    gpu_total_milli: u64,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::with_policy(Box::new(FragmentationAware::default()))
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("nodes", &self.index_of.len())
            .field("policy", &self.policy.name())
            .field("holders", &self.holders.len())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with the default, fragmentation-aware policy.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_policy(policy: Box<dyn PlacementPolicy>) -> Self {
        Self {
            kinds: Vec::new(),
            kind_index: HashMap::new(),
            kind_nodes: Vec::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            index_of: HashMap::new(),
            classes: HashMap::new(),
            policy,
            holders: BTreeMap::new(),
            changed_holders: None,
            gpu_used_milli: 0,
            gpu_total_milli: 0,
        }
    }

    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Lets the policy learn from a request (the head calls this once per submitted request).
    pub fn observe(&mut self, request: &Request) {
        self.policy.observe(request);
    }

    /// Adds a node, or replaces its capacity and clears its allocations if it was known.
    pub fn add_node(&mut self, node_id: &str, capacity: NodeCapacity) {
        self.remove_node(node_id);
        let signature = format!("{capacity:?}");
        let kind = match self.kind_index.get(&signature) {
            Some(kind) => *kind,
            None => {
                let kind = self.kinds.len() as u32;
                self.kind_index.insert(signature, kind);
                self.kinds.push(capacity);
                self.kind_nodes.push(0);
                kind
            }
        };
        self.kind_nodes[kind as usize] += 1;
        let usage = NodeUsage::empty(&self.kinds[kind as usize]);
        let mut slot = NodeSlot {
            id: node_id.to_string(),
            kind,
            usage,
            schedulable: true,
            class: ClassKey {
                kind,
                cpu_milli: 0,
                memory_bytes: 0,
                gpus: Vec::new(),
                custom: Vec::new(),
            },
            holders: BTreeSet::new(),
            preemptible: Vec::new(),
        };
        slot.class = self.class_of(&slot);
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index_of.insert(node_id.to_string(), index);
        self.gpu_total_milli += self.kinds[kind as usize].gpus.len() as u64 * 1000;
        self.enter_class(index);
    }

    /// Forgets a node (it died) and its allocations. Returns the holders that lost bundles there:
    /// their lost bundles wait in `lost_bundles` until placed again or the holder is released.
    pub fn remove_node(&mut self, node_id: &str) -> Vec<String> {
        let Some(index) = self.index_of.remove(node_id) else {
            return Vec::new();
        };
        self.leave_class(index);
        let Some(slot) = self.slots[index].take() else {
            return Vec::new();
        };
        self.free_slots.push(index);
        self.kind_nodes[slot.kind as usize] -= 1;
        self.gpu_total_milli -= self.kinds[slot.kind as usize].gpus.len() as u64 * 1000;
        self.gpu_used_milli -= slot.usage.gpu_milli.iter().sum::<u64>();
        let mut affected = Vec::new();
        for holder_id in slot.holders {
            self.holder_changed(&holder_id);
            if let Some(holder) = self.holders.get_mut(&holder_id) {
                for allocation in holder.allocations.iter_mut() {
                    if allocation.as_ref().is_some_and(|a| a.node_id == node_id) {
                        *allocation = None;
                    }
                }
                affected.push(holder_id);
            }
        }
        affected
    }

    /// Stops (or resumes) placing new work on a node; what runs there stays.
    pub fn set_schedulable(&mut self, node_id: &str, schedulable: bool) {
        let Some(&index) = self.index_of.get(node_id) else {
            return;
        };
        self.leave_class(index);
        if let Some(slot) = self.slots[index].as_mut() {
            slot.schedulable = schedulable;
        }
        self.enter_class(index);
    }

    /// Whether anything holds resources on a node (a holder with a bundle there, or any use).
    pub fn holds_anything(&self, node_id: &str) -> bool {
        self.slot_of(node_id).is_some_and(|slot| {
            !slot.holders.is_empty()
                || slot.usage.cpu_milli > 0
                || slot.usage.memory_bytes > 0
                || slot.usage.gpu_milli.iter().any(|g| *g > 0)
                || slot.usage.custom.values().any(|q| *q > 0.0)
        })
    }

    pub fn has_node(&self, node_id: &str) -> bool {
        self.index_of.contains_key(node_id)
    }

    pub fn node_count(&self) -> usize {
        self.index_of.len()
    }

    pub fn usage(&self, node_id: &str) -> Option<NodeUsage> {
        self.slot_of(node_id).map(|slot| slot.usage.clone())
    }

    pub fn capacity(&self, node_id: &str) -> Option<&NodeCapacity> {
        self.slot_of(node_id)
            .map(|slot| &self.kinds[slot.kind as usize])
    }

    /// Every node id with its capacity and use, in id order.
    pub fn nodes(&self) -> Vec<(&str, &NodeCapacity, &NodeUsage)> {
        let mut nodes: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .map(|slot| {
                (
                    slot.id.as_str(),
                    &self.kinds[slot.kind as usize],
                    &slot.usage,
                )
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        nodes
    }

    /// Allocated and total milli-GPU over the cluster.
    pub fn gpu_allocation(&self) -> (u64, u64) {
        (self.gpu_used_milli, self.gpu_total_milli)
    }

    /// Checks that some node, empty, could hold `request`; the error says what is lacking.
    pub fn check_feasible(&self, request: &Request) -> Result<(), PlacementError> {
        if self.index_of.is_empty() {
            return Err(PlacementError::Infeasible(
                "the cluster has no alive nodes".to_string(),
            ));
        }
        if let Some(affinity) = request.node_affinity.as_ref().filter(|a| !a.soft) {
            let Some(slot) = self.slot_of(&affinity.node_id) else {
                return Err(PlacementError::Infeasible(format!(
                    "pinned to node {}, which is not in the cluster",
                    affinity.node_id
                )));
            };
            let capacity = &self.kinds[slot.kind as usize];
            return resources::fit_options(capacity, &NodeUsage::empty(capacity), request)
                .map(|_| ())
                .map_err(|shortfall| {
                    PlacementError::Infeasible(format!(
                        "pinned to node {}, which could never hold it: {shortfall}",
                        affinity.node_id
                    ))
                });
        }
        let mut reasons = Vec::new();
        for kind in self.live_kinds() {
            let capacity = &self.kinds[kind as usize];
            match resources::fit_options(capacity, &NodeUsage::empty(capacity), request) {
                Ok(_) => return Ok(()),
                Err(shortfall) => reasons.push((shortfall, self.kind_count(kind))),
            }
        }
        Err(PlacementError::Infeasible(summary::infeasible(&reasons)))
    }

    /// Places `request` with the policy and records the allocation (not tied to a holder).
    pub fn place(&mut self, request: &Request) -> Result<Allocation, PlacementError> {
        self.check_feasible(request)?;
        let choice = self.choose(request, &SearchRules::default())?;
        Ok(self.commit(choice, request))
    }

    /// Places `request` on the node `node_id` only (a node that registers with work it already
    /// runs, after the head restarted).
    pub fn place_on(
        &mut self,
        node_id: &str,
        request: &Request,
    ) -> Result<Allocation, PlacementError> {
        let mut pinned = request.clone();
        pinned.node_affinity = Some(NodeAffinity {
            node_id: node_id.to_string(),
            soft: false,
        });
        self.place(&pinned)
    }

    /// Gives an allocation back. Releasing on a node that was removed is a no-op.
    pub fn release(&mut self, allocation: &Allocation) {
        let Some(&index) = self.index_of.get(&allocation.node_id) else {
            return;
        };
        self.leave_class(index);
        if let Some(slot) = self.slots[index].as_mut() {
            let before: u64 = slot.usage.gpu_milli.iter().sum();
            slot.usage
                .remove(&self.kinds[slot.kind as usize], allocation);
            self.gpu_used_milli -= before - slot.usage.gpu_milli.iter().sum::<u64>();
        }
        self.enter_class(index);
    }

    /// Takes an allocation again (undoing a `release` during a trial).
    fn reapply(&mut self, allocation: &Allocation) {
        let Some(&index) = self.index_of.get(&allocation.node_id) else {
            return;
        };
        self.leave_class(index);
        if let Some(slot) = self.slots[index].as_mut() {
            let before: u64 = slot.usage.gpu_milli.iter().sum();
            slot.usage.add(&self.kinds[slot.kind as usize], allocation);
            self.gpu_used_milli += slot.usage.gpu_milli.iter().sum::<u64>() - before;
        }
        self.enter_class(index);
    }

    /// Finds the best node and devices for `request` under `rules`, honouring node affinity.
    fn choose(&mut self, request: &Request, rules: &SearchRules) -> Result<Choice, PlacementError> {
        match &request.node_affinity {
            Some(affinity) if !affinity.soft => {
                let Some(&index) = self.index_of.get(&affinity.node_id) else {
                    return Err(PlacementError::Infeasible(format!(
                        "pinned to node {}, which is not in the cluster",
                        affinity.node_id
                    )));
                };
                let excluded = rules.exclude.contains(&index)
                    || !self.slots[index].as_ref().is_some_and(|s| s.schedulable);
                let exclude: Vec<usize> = if excluded { vec![index] } else { Vec::new() };
                let only = [(index, 0.0)];
                self.search(request, &exclude, &only, true)
            }
            Some(affinity) => {
                let mut adjust = rules.adjust.to_vec();
                if let Some(&index) = self.index_of.get(&affinity.node_id) {
                    adjust.push((index, -1e15));
                }
                self.search(request, rules.exclude, &adjust, false)
            }
            None => self.search(request, rules.exclude, rules.adjust, false),
        }
    }

    /// Scores every class (and each adjusted node on its own) and returns the cheapest
    /// placement; `only_adjusted` limits the search to the adjusted nodes.
    fn search(
        &mut self,
        request: &Request,
        exclude: &[usize],
        adjust: &[(usize, f64)],
        only_adjusted: bool,
    ) -> Result<Choice, PlacementError> {
        let mut best: Option<(f64, usize, Vec<GpuShare>)> = None;
        let mut shortfalls: Vec<(Shortfall, usize)> = Vec::new();
        self.policy.begin_decision();
        let Self {
            kinds,
            slots,
            classes,
            policy,
            ..
        } = self;
        let mut consider = |index: usize, members: usize, shift: f64| {
            let Some(slot) = slots[index].as_ref() else {
                return;
            };
            let capacity = &kinds[slot.kind as usize];
            match resources::fit_options(capacity, &slot.usage, request) {
                Ok(options) => {
                    let before = NodeView {
                        kind: slot.kind,
                        capacity,
                        usage: &slot.usage,
                        members,
                    };
                    for gpus in options {
                        let mut after_usage = slot.usage.clone();
                        after_usage.add_parts(
                            capacity,
                            request.cpu_milli,
                            request.memory_bytes,
                            &gpus,
                            &request.custom,
                        );
                        let after = NodeView {
                            usage: &after_usage,
                            ..before
                        };
                        let score = policy.score(&before, &after) + shift;
                        let better = match &best {
                            None => true,
                            Some((best_score, best_index, _)) => {
                                score < *best_score || (score == *best_score && index < *best_index)
                            }
                        };
                        if better {
                            best = Some((score, index, gpus));
                        }
                    }
                }
                Err(shortfall) => shortfalls.push((shortfall, members)),
            }
        };
        for (index, shift) in adjust {
            if !exclude.contains(index) && slots[*index].as_ref().is_some_and(|s| s.schedulable) {
                consider(*index, 1, *shift);
            }
        }
        if !only_adjusted {
            for members in classes.values() {
                let mut free = members.iter().filter(|index| {
                    !exclude.contains(index) && !adjust.iter().any(|(a, _)| a == *index)
                });
                if let Some(&index) = free.next() {
                    consider(index, members.len(), 0.0);
                }
            }
        }
        match best {
            Some((_, slot, gpus)) => Ok(Choice { slot, gpus }),
            None => Err(PlacementError::Busy(summary::busy(&shortfalls))),
        }
    }

    /// Records the allocation of a chosen placement.
    fn commit(&mut self, choice: Choice, request: &Request) -> Allocation {
        let node_id = self.slots[choice.slot]
            .as_ref()
            .map(|slot| slot.id.clone())
            .unwrap_or_default();
        let allocation = Allocation {
            node_id,
            cpu_milli: request.cpu_milli,
            memory_bytes: request.memory_bytes,
            gpus: choice.gpus,
            custom: request.custom.clone(),
        };
        self.reapply(&allocation);
        allocation
    }

    fn slot_of(&self, node_id: &str) -> Option<&NodeSlot> {
        self.index_of
            .get(node_id)
            .and_then(|index| self.slots[*index].as_ref())
    }

    fn live_kinds(&self) -> Vec<u32> {
        (0..self.kinds.len() as u32)
            .filter(|kind| self.kind_nodes[*kind as usize] > 0)
            .collect()
    }

    fn kind_count(&self, kind: u32) -> usize {
        self.kind_nodes[kind as usize]
    }

    fn class_of(&self, slot: &NodeSlot) -> ClassKey {
        let capacity = &self.kinds[slot.kind as usize];
        let mut gpus = slot.usage.gpu_milli.clone();
        let one_model = capacity
            .gpus
            .iter()
            .all(|gpu| gpu.model == capacity.gpus[0].model);
        if one_model {
            gpus.sort_unstable();
        }
        ClassKey {
            kind: slot.kind,
            cpu_milli: slot.usage.cpu_milli,
            memory_bytes: slot.usage.memory_bytes,
            gpus,
            custom: slot
                .usage
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), amount.to_bits()))
                .collect(),
        }
    }

    fn leave_class(&mut self, index: usize) {
        let Some(slot) = self.slots[index].as_ref() else {
            return;
        };
        if let Some(members) = self.classes.get_mut(&slot.class) {
            members.remove(&index);
            if members.is_empty() {
                self.classes.remove(&slot.class);
            }
        }
    }

    fn enter_class(&mut self, index: usize) {
        let Some(slot) = self.slots[index].as_ref() else {
            return;
        };
        let class = self.class_of(slot);
        let schedulable = slot.schedulable;
        if let Some(slot) = self.slots[index].as_mut() {
            slot.class = class.clone();
        }
        if schedulable {
            self.classes.entry(class).or_default().insert(index);
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
