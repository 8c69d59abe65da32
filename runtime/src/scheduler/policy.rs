//! Placement policies: how the scheduler ranks the nodes a request fits on. A policy sees each
//! candidate node before and after the placement and returns a score (lower is better); the
//! scheduler enumerates candidates and keeps the best. Random, best-fit and GPU packing live
//! here; the default, fragmentation-aware policy has its own module, and the by-name factory
//! that knows both sits in the scheduler's `mod.rs`.

use super::resources::{NodeCapacity, NodeUsage, Request};

/// One candidate node as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Nodes with the same capacity and labels share a kind.
    pub kind: u32,
    pub capacity: &'a NodeCapacity,
    pub usage: &'a NodeUsage,
    /// How many nodes are in exactly this state (the scheduler scores each state once).
    pub members: usize,
}

impl NodeView<'_> {
    /// Free CPU as a fraction of the node's CPU.
    pub fn free_cpu_fraction(&self) -> f64 {
        if self.capacity.cpu_milli == 0 {
            return 0.0;
        }
        self.capacity.cpu_milli.saturating_sub(self.usage.cpu_milli) as f64
            / self.capacity.cpu_milli as f64
    }

    /// Devices nothing is using.
    pub fn idle_gpus(&self) -> usize {
        self.usage
            .gpu_milli
            .iter()
            .filter(|used| **used == 0)
            .count()
    }
}

/// Ranks candidate placements.
pub trait PlacementPolicy: Send {
    fn name(&self) -> &'static str;

    /// Sees every request submitted (placed or not), so a policy can learn the workload.
    fn observe(&mut self, _request: &Request) {}

    /// A new decision starts (the scheduler calls this before scoring its candidates).
    fn begin_decision(&mut self) {}

    /// The cost of moving a node from `before` to `after`; the lowest cost wins.
    fn score(&mut self, before: &NodeView, after: &NodeView) -> f64;
}

/// Uniformly random among the nodes the request fits on. The draw for a candidate depends on
/// the seed, the decision number and the candidate's state only, so a run does not depend on
/// the order in which candidates are visited.
pub struct RandomPolicy {
    seed: u64,
    decision: u64,
}

impl RandomPolicy {
    pub fn new(seed: u64) -> Self {
        Self { seed, decision: 0 }
    }
}

impl PlacementPolicy for RandomPolicy {
    fn name(&self) -> &'static str {
        "random"
    }

    fn begin_decision(&mut self) {
        self.decision += 1;
    }

    fn score(&mut self, _before: &NodeView, after: &NodeView) -> f64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (self.seed, self.decision, after.kind).hash(&mut hasher);
        (
            after.usage.cpu_milli,
            after.usage.memory_bytes,
            &after.usage.gpu_milli,
        )
            .hash(&mut hasher);
        let uniform = SplitMix64::new(hasher.finish())
            .next_f64()
            .max(f64::MIN_POSITIVE);
        // An exponential race: the minimum over states lands on each state in proportion to how
        // many nodes it holds, so every node is equally likely.
        -uniform.ln() / after.members.max(1) as f64
    }
}

/// The node left with the least free GPU, then the least free CPU; a fraction goes where it
/// keeps the most devices whole.
pub struct BestFit;

impl PlacementPolicy for BestFit {
    fn name(&self) -> &'static str {
        "best-fit"
    }

    fn score(&mut self, _before: &NodeView, after: &NodeView) -> f64 {
        best_fit_score(after)
    }
}

/// Best fit as a number: free milli-GPU first, idle devices kept, then free CPU.
pub(crate) fn best_fit_score(after: &NodeView) -> f64 {
    after.usage.free_gpu_milli() as f64 * 10.0 - after.idle_gpus() as f64
        + after.free_cpu_fraction()
}

/// Work goes to devices already in use, then to nodes already in use, and only then opens an
/// idle node.
pub struct GpuPacking;

impl PlacementPolicy for GpuPacking {
    fn name(&self) -> &'static str {
        "gpu-packing"
    }

    fn score(&mut self, before: &NodeView, after: &NodeView) -> f64 {
        let opened = before.idle_gpus().saturating_sub(after.idle_gpus()) as f64;
        let node_was_idle =
            before.usage.gpu_milli.iter().all(|used| *used == 0) && before.usage.cpu_milli == 0;
        opened * 1e6 + if node_was_idle { 1e5 } else { 0.0 } + best_fit_score(after)
    }
}

/// A small, fast, seedable generator (SplitMix64); enough for random placement and shuffles.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound); `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}
