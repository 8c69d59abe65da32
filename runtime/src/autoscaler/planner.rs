//! The autoscaler's decisions, as a pure function of the cluster: which nodes to launch for the
//! work that waits (bin-packed onto node types, every node a gang or placement group needs at
//! once or none), which idle or under-used nodes to drain, and why each set of work still waits.
//! The head and the trace simulator (`troupe sim autoscale`) run the same planner.
//!
//! Planning runs on the live scheduler: nodes being launched and nodes it considers launching are
//! added to it for the trial, the waiting work is placed on them, and every trial change is
//! undone before returning.

use super::config::{AutoscalerConfig, Consolidation, NodeType};
use super::trial::{fill_share, placeable_prefix, placeable_prefix_with, Trial};
use crate::scheduler::{Allocation, NodeCapacity, Request, Scheduler, Strategy};
use std::collections::BTreeMap;

/// Work that waits to be placed: one actor, or a gang or placement group placed all at once.
#[derive(Debug, Clone)]
pub struct PendingSet {
    /// How status names it ("actor X", "group Y").
    pub name: String,
    pub bundles: Vec<Request>,
    pub strategy: Strategy,
    pub priority: i32,
    pub preemptible: bool,
}

/// Where an autoscaled node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePhase {
    /// Asked of the provider, not registered yet.
    Launching,
    Running,
    /// Takes no new work; stopped once empty.
    Draining,
}

/// One node the autoscaler launched (nodes it did not launch are capacity it leaves alone).
#[derive(Debug, Clone)]
pub struct ManagedNode {
    /// The scheduler's node id once registered; the launch id before.
    pub id: String,
    pub node_type: String,
    pub phase: NodePhase,
    /// How long it has held nothing (0 while it holds something).
    pub idle_for_s: f64,
    /// How long its use has been under the consolidation threshold (0 when not).
    pub low_use_for_s: f64,
    /// What it holds, when every holder there may be preempted (empty otherwise, or idle).
    pub movable: Vec<Request>,
}

/// Nodes to launch of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub node_type: String,
    pub count: u32,
    pub reason: String,
}

/// A node to drain, then stop.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    pub node_id: String,
    pub reason: String,
    /// Whether its (preemptible) holders are to be moved off it first.
    pub evict: bool,
}

/// Why some waiting work launches nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub set: String,
    pub why: String,
}

/// One round of decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub launches: Vec<Launch>,
    pub drains: Vec<Drain>,
    pub waiting: Vec<Waiting>,
}

/// How the node type for new work is chosen among those that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeChoice {
    /// The type left with the fewest idle GPUs (or CPU share, for CPU-only work), then the
    /// cheapest: the Cluster Autoscaler's `least-waste` expander.
    LeastWaste,
    /// Ray's utilisation scorer: GPU types only for GPU work, then the highest minimum and mean
    /// use over the resources the work asks for.
    RayUtilization,
    /// troupe's default: first the type that copies of the work would fill best (in steps of
    /// 5%, so that the next arrivals of the same shape pack onto it), then the least waste now.
    PackingAware,
}

/// The decision rules, from the config (or a baseline's, in the simulator).
#[derive(Debug, Clone)]
pub struct Planner {
    types: Vec<(String, NodeType, NodeCapacity)>,
    pub choice: TypeChoice,
    pub idle_timeout_s: f64,
    pub consolidation: Option<Consolidation>,
    pub preemptible_gpu_budget: Option<u32>,
    /// A cap on nodes launched in one round (a runaway guard).
    pub max_launches_per_round: u32,
    /// `fill_share` by (type, request shape): it takes up to 256 trial placements.
    fills: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), f64>>>,
}

impl Planner {
    pub fn new(config: &AutoscalerConfig) -> Self {
        Self {
            types: config
                .node_types
                .iter()
                .map(|(name, t)| (name.clone(), t.clone(), t.capacity(name)))
                .collect(),
            choice: TypeChoice::PackingAware,
            idle_timeout_s: config.idle_timeout_s,
            consolidation: config.consolidation,
            preemptible_gpu_budget: config.preemptible_gpu_budget,
            max_launches_per_round: 1000,
            fills: Default::default(),
        }
    }

    /// The capacity a node of `node_type` registers with.
    pub fn capacity(&self, node_type: &str) -> Option<&NodeCapacity> {
        self.types
            .iter()
            .find(|(name, _, _)| name == node_type)
            .map(|(_, _, c)| c)
    }

    /// The decisions for now. `pending` is in queue order; higher priority is served first.
    pub fn plan(
        &self,
        scheduler: &mut Scheduler,
        nodes: &[ManagedNode],
        pending: &[PendingSet],
    ) -> Plan {
        let mut trial = Trial::default();
        // The trial is undone even if planning panics: trial nodes left in the live scheduler
        // could be given real work.
        let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.plan_on_trial(scheduler, &mut trial, nodes, pending)
        }));
        trial.undo(scheduler);
        match planned {
            Ok(plan) => plan,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn plan_on_trial(
        &self,
        scheduler: &mut Scheduler,
        trial: &mut Trial,
        nodes: &[ManagedNode],
        pending: &[PendingSet],
    ) -> Plan {
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        let mut gpus_total: u64 = scheduler.gpu_allocation().1 / 1000;
        for node in nodes {
            *counts.entry(node.node_type.as_str()).or_default() += 1;
            if node.phase == NodePhase::Launching {
                if let Some(capacity) = self.capacity(&node.node_type) {
                    trial.add_node(scheduler, capacity.clone());
                    gpus_total += capacity.gpus.len() as u64;
                }
            }
        }
        let mut plan = Plan::default();
        let mut launched: BTreeMap<String, (u32, Vec<String>)> = BTreeMap::new();
        let mut order: Vec<&PendingSet> = pending.iter().collect();
        order.sort_by_key(|set| std::cmp::Reverse(set.priority));
        let mut launches_left = self.max_launches_per_round;
        for set in order.into_iter().filter(|set| !set.bundles.is_empty()) {
            if let Ok(allocations) = scheduler.place_all(&set.bundles, set.strategy) {
                trial.allocations.extend(allocations);
                continue;
            }
            match self.launch_for(scheduler, trial, set, &counts, gpus_total, launches_left) {
                Ok(types) => {
                    for name in types {
                        let t = self.node_type(&name);
                        gpus_total += t.gpus as u64;
                        *counts.entry(self.name_ref(&name)).or_default() += 1;
                        launches_left -= 1;
                        let entry = launched.entry(name).or_default();
                        entry.0 += 1;
                        if entry.1.len() < 3 && !entry.1.contains(&set.name) {
                            entry.1.push(set.name.clone());
                        }
                    }
                }
                Err(why) => plan.waiting.push(Waiting {
                    set: set.name.clone(),
                    why,
                }),
            }
        }
        for (name, t, _) in &self.types {
            let have = counts.get(name.as_str()).copied().unwrap_or(0);
            if have < t.min {
                let entry = launched.entry(name.clone()).or_default();
                entry.0 += t.min - have;
                entry.1.push(format!("min {} of type {name}", t.min));
                counts.insert(name, t.min);
            }
        }
        for (node_type, (count, for_whom)) in launched {
            plan.launches.push(Launch {
                node_type,
                count,
                reason: format!("for {}", for_whom.join(", ")),
            });
        }
        self.scale_down(scheduler, nodes, &counts, &plan.waiting, &mut plan.drains);
        plan
    }

    fn node_type(&self, name: &str) -> &NodeType {
        &self
            .types
            .iter()
            .find(|(n, _, _)| n == name)
            .expect("a planned type")
            .1
    }

    fn name_ref(&self, name: &str) -> &str {
        &self
            .types
            .iter()
            .find(|(n, _, _)| n == name)
            .expect("a planned type")
            .0
    }

    /// Adds trial nodes until `set` fits; their types, or why none would do. On failure the
    /// trial nodes added for it are removed again (never half a gang).
    fn launch_for(
        &self,
        scheduler: &mut Scheduler,
        trial: &mut Trial,
        set: &PendingSet,
        counts: &BTreeMap<&str, u32>,
        gpus_total: u64,
        launches_left: u32,
    ) -> Result<Vec<String>, String> {
        let mut added: Vec<(String, String)> = Vec::new(); // (node id, type)
        let mut placed_before = placeable_prefix(scheduler, set);
        let mut blocked: Vec<String> = Vec::new();
        let fail = |scheduler: &mut Scheduler,
                    trial: &mut Trial,
                    added: &[(String, String)],
                    why: String| {
            for (id, _) in added {
                trial.remove_node(scheduler, id);
            }
            Err(why)
        };
        loop {
            if added.len() as u32 >= launches_left {
                return fail(
                    scheduler,
                    trial,
                    &added,
                    "the launch limit of this round is reached".to_string(),
                );
            }
            let mut best: Option<(Score, &str)> = None;
            blocked.clear();
            let extra_gpus: u64 = added
                .iter()
                .map(|(_, t)| self.node_type(t).gpus as u64)
                .sum();
            for (name, t, capacity) in &self.types {
                let have = counts.get(name.as_str()).copied().unwrap_or(0)
                    + added.iter().filter(|(_, n)| n == name).count() as u32;
                if have >= t.max {
                    blocked.push(format!("type {name} is at its max of {}", t.max));
                    continue;
                }
                if set.preemptible {
                    if let Some(budget) = self.preemptible_gpu_budget {
                        if t.gpus > 0 && gpus_total + extra_gpus + t.gpus as u64 > budget as u64 {
                            blocked.push(format!(
                                "type {name} would pass the preemptible GPU budget of {budget}"
                            ));
                            continue;
                        }
                    }
                }
                let id = trial.add_node(scheduler, capacity.clone());
                let score = self.score(scheduler, set, &id, capacity, t);
                trial.remove_node(scheduler, &id);
                if score.placed > placed_before && best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, name));
                }
            }
            let Some((score, name)) = best else {
                let why = match self.infeasible_bundle(set) {
                    Some(why) => format!("no node type could hold it: {why}"),
                    None if !blocked.is_empty() => {
                        format!("no node type may be added: {}", blocked.join("; "))
                    }
                    None => format!(
                        "its {} bundles ({}) need more nodes than the types' max allow",
                        set.bundles.len(),
                        set.strategy.name()
                    ),
                };
                return fail(scheduler, trial, &added, why);
            };
            let name = name.to_string();
            let capacity = self.capacity(&name).expect("known").clone();
            let id = trial.add_node(scheduler, capacity);
            added.push((id, name));
            if score.complete {
                // Placed again for real: a policy with randomness may choose differently.
                match scheduler.place_all(&set.bundles, set.strategy) {
                    Ok(allocations) => {
                        trial.allocations.extend(allocations);
                        return Ok(added.into_iter().map(|(_, t)| t).collect());
                    }
                    Err(e) => {
                        return fail(
                            scheduler,
                            trial,
                            &added,
                            format!("the trial placement did not repeat: {e}"),
                        )
                    }
                }
            }
            placed_before = score.placed;
        }
    }

    /// How well a trial node `id` of one type serves `set` (higher is better).
    fn score(
        &self,
        scheduler: &mut Scheduler,
        set: &PendingSet,
        id: &str,
        capacity: &NodeCapacity,
        t: &NodeType,
    ) -> Score {
        let (placed, allocations) = placeable_prefix_with(scheduler, set);
        let complete = placed == set.bundles.len();
        let usage = scheduler.usage(id).unwrap_or_default();
        for allocation in &allocations {
            scheduler.release(allocation);
        }
        let gpu_share = |used: u64, total: usize| {
            if total == 0 {
                0.0
            } else {
                used as f64 / (total as f64 * 1000.0)
            }
        };
        let gpu_used = gpu_share(usage.gpu_milli.iter().sum(), capacity.gpus.len());
        let cpu_used = if capacity.cpu_milli == 0 {
            0.0
        } else {
            usage.cpu_milli as f64 / capacity.cpu_milli as f64
        };
        let mem_used = if capacity.memory_bytes == 0 {
            0.0
        } else {
            usage.memory_bytes as f64 / capacity.memory_bytes as f64
        };
        let wants_gpu = set.bundles.iter().any(|b| b.gpu_milli > 0);
        let (fit_a, fit_b) = match self.choice {
            TypeChoice::LeastWaste => {
                // Idle GPUs left on the new node, then idle CPU share.
                let idle_gpus = capacity.gpus.len() as f64 * (1.0 - gpu_used);
                (-idle_gpus, cpu_used)
            }
            TypeChoice::PackingAware => {
                let fill = self.fill_share_cached(capacity, &set.bundles[0]);
                let idle_gpus = capacity.gpus.len() as f64 * (1.0 - gpu_used);
                ((fill * 20.0).floor(), -idle_gpus)
            }
            TypeChoice::RayUtilization => {
                let mut shares = vec![cpu_used];
                if mem_used > 0.0 {
                    shares.push(mem_used);
                }
                if wants_gpu {
                    shares.push(gpu_used);
                }
                let min = shares.iter().cloned().fold(f64::INFINITY, f64::min);
                let mean = shares.iter().sum::<f64>() / shares.len() as f64;
                (min, mean)
            }
        };
        Score {
            complete,
            placed,
            gpu_fit: wants_gpu || capacity.gpus.is_empty(),
            fit_a,
            fit_b,
            cheapness: -t.price_per_hour,
        }
    }

    fn fill_share_cached(&self, capacity: &NodeCapacity, request: &Request) -> f64 {
        let key = (format!("{capacity:?}"), format!("{request:?}"));
        let mut fills = match self.fills.lock() {
            Ok(fills) => fills,
            Err(poisoned) => poisoned.into_inner(),
        };
        if fills.len() > 10_000 {
            fills.clear();
        }
        *fills
            .entry(key)
            .or_insert_with(|| fill_share(capacity, request))
    }

    /// Why no node type, even empty, could hold one of the set's bundles (None: each fits some).
    fn infeasible_bundle(&self, set: &PendingSet) -> Option<String> {
        let mut probe = Scheduler::new();
        for (name, _, capacity) in &self.types {
            probe.add_node(name, capacity.clone());
        }
        set.bundles
            .iter()
            .find_map(|bundle| probe.check_feasible(bundle).err().map(|e| e.to_string()))
    }

    fn scale_down(
        &self,
        scheduler: &mut Scheduler,
        nodes: &[ManagedNode],
        counts: &BTreeMap<&str, u32>,
        waiting: &[Waiting],
        drains: &mut Vec<Drain>,
    ) {
        let mut left: BTreeMap<&str, u32> = counts.clone();
        let min_of = |name: &str| {
            self.types
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(0, |(_, t, _)| t.min)
        };
        for node in nodes.iter().filter(|n| n.phase == NodePhase::Running) {
            // Idle until now, but this round's plan may have put waiting work there.
            if node.idle_for_s >= self.idle_timeout_s && !scheduler.holds_anything(&node.id) {
                let count = left.entry(node.node_type.as_str()).or_default();
                if *count > min_of(&node.node_type) {
                    *count -= 1;
                    drains.push(Drain {
                        node_id: node.id.clone(),
                        reason: format!(
                            "idle for {:.0} s (timeout {:.0} s)",
                            node.idle_for_s, self.idle_timeout_s
                        ),
                        evict: false,
                    });
                }
            }
        }
        let Some(rule) = self.consolidation else {
            return;
        };
        if !waiting.is_empty() {
            return; // moving work while other work waits would only add to the queue
        }
        for node in nodes
            .iter()
            .filter(|n| n.phase == NodePhase::Running && n.idle_for_s == 0.0)
        {
            if node.movable.is_empty() || node.low_use_for_s < rule.after_s {
                continue;
            }
            let count = left.get(node.node_type.as_str()).copied().unwrap_or(0);
            if count <= min_of(&node.node_type) {
                continue;
            }
            scheduler.set_schedulable(&node.id, false);
            let moved: Vec<Allocation> = node
                .movable
                .iter()
                .map_while(|request| scheduler.place(request).ok())
                .collect();
            let fits = moved.len() == node.movable.len();
            for allocation in &moved {
                scheduler.release(allocation);
            }
            scheduler.set_schedulable(&node.id, true);
            if fits {
                drains.push(Drain {
                    node_id: node.id.clone(),
                    reason: format!(
                        "under {:.0}% used for {:.0} s; its {} preemptible holder(s) fit elsewhere",
                        rule.below_utilization * 100.0,
                        node.low_use_for_s,
                        node.movable.len()
                    ),
                    evict: true,
                });
                return; // one at a time, as the Cluster Autoscaler does
            }
        }
    }
}

/// How well a node type serves a set; compared field by field.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Score {
    complete: bool,
    placed: usize,
    gpu_fit: bool,
    fit_a: f64,
    fit_b: f64,
    cheapness: f64,
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
