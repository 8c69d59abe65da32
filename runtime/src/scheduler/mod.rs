//! Placement decisions: which node, and which GPU devices on it, an actor goes to.
//!
//! Pure on purpose: no I/O, no async, no clocks, so that the head calls it under its lock and
//! tests and simulations drive it directly. It owns the resource model (CPU in milli-cores,
//! memory in bytes, each GPU device in milli-GPU, custom resources, node labels) and the
//! bookkeeping of what is allocated where.

mod resources;

pub use resources::{Allocation, GpuDevice, GpuShare, NodeCapacity, Request, Shortfall};

use std::collections::BTreeMap;

/// One node as the scheduler sees it.
#[derive(Debug, Clone)]
struct NodeSlot {
    capacity: NodeCapacity,
    used_cpu_milli: u64,
    used_memory_bytes: u64,
    /// Milli-GPU in use, per device position in `capacity.gpus`.
    used_gpu_milli: Vec<u64>,
    used_custom: BTreeMap<String, f64>,
    schedulable: bool,
}

impl NodeSlot {
    /// Where device `index` sits in this node's GPU list.
    fn gpu_position(&self, index: u32) -> Option<usize> {
        self.capacity.gpus.iter().position(|gpu| gpu.index == index)
    }
}

/// What is in use on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Per device, in the order of `NodeCapacity::gpus`.
    pub gpu_milli: Vec<u64>,
    pub custom: BTreeMap<String, f64>,
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

/// The cluster's resources and allocations, keyed by node id.
#[derive(Debug, Default, Clone)]
pub struct Scheduler {
    nodes: BTreeMap<String, NodeSlot>,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, or replaces its capacity and clears its allocations if it was known.
    pub fn add_node(&mut self, node_id: &str, capacity: NodeCapacity) {
        let gpus = capacity.gpus.len();
        self.nodes.insert(
            node_id.to_string(),
            NodeSlot {
                capacity,
                used_cpu_milli: 0,
                used_memory_bytes: 0,
                used_gpu_milli: vec![0; gpus],
                used_custom: BTreeMap::new(),
                schedulable: true,
            },
        );
    }

    /// Stops placing work on a node (it died) and forgets its allocations.
    pub fn remove_node(&mut self, node_id: &str) {
        self.nodes.remove(node_id);
    }

    pub fn has_node(&self, node_id: &str) -> bool {
        self.nodes.contains_key(node_id)
    }

    pub fn usage(&self, node_id: &str) -> Option<NodeUsage> {
        self.nodes.get(node_id).map(|slot| NodeUsage {
            cpu_milli: slot.used_cpu_milli,
            memory_bytes: slot.used_memory_bytes,
            gpu_milli: slot.used_gpu_milli.clone(),
            custom: slot.used_custom.clone(),
        })
    }

    /// Checks that some node, empty, could hold `request`; the error says what is lacking.
    pub fn check_feasible(&self, request: &Request) -> Result<(), PlacementError> {
        if self.nodes.is_empty() {
            return Err(PlacementError::Infeasible(
                "the cluster has no alive nodes".to_string(),
            ));
        }
        let mut reasons = Vec::new();
        for (node_id, slot) in &self.nodes {
            let empty = vec![0; slot.capacity.gpus.len()];
            match resources::fit(&slot.capacity, 0, 0, &empty, &BTreeMap::new(), request) {
                Ok(_) => return Ok(()),
                Err(shortfall) => reasons.push((node_id.clone(), shortfall)),
            }
        }
        Err(PlacementError::Infeasible(summarize(&reasons, true)))
    }

    /// Picks a node for `request` (best fit: the node left with the least free GPU, then CPU)
    /// and records the allocation.
    pub fn place(&mut self, request: &Request) -> Result<Allocation, PlacementError> {
        self.place_where(request, |_| true)
    }

    /// Places `request` on the node `node_id` only (a node that registers with work it already
    /// runs, after the head restarted).
    pub fn place_on(
        &mut self,
        node_id: &str,
        request: &Request,
    ) -> Result<Allocation, PlacementError> {
        self.place_where(request, |candidate| candidate == node_id)
    }

    fn place_where(
        &mut self,
        request: &Request,
        eligible: impl Fn(&str) -> bool,
    ) -> Result<Allocation, PlacementError> {
        self.check_feasible(request)?;
        let mut best: Option<(u64, u64, String, Vec<GpuShare>)> = None;
        let mut reasons = Vec::new();
        for (node_id, slot) in &self.nodes {
            if !slot.schedulable || !eligible(node_id) {
                continue;
            }
            match resources::fit(
                &slot.capacity,
                slot.used_cpu_milli,
                slot.used_memory_bytes,
                &slot.used_gpu_milli,
                &slot.used_custom,
                request,
            ) {
                Ok(gpus) => {
                    let free_gpu: u64 = slot
                        .used_gpu_milli
                        .iter()
                        .map(|used| 1000 - used)
                        .sum::<u64>()
                        - request.gpu_milli;
                    let free_cpu =
                        slot.capacity.cpu_milli - slot.used_cpu_milli - request.cpu_milli;
                    let better = match &best {
                        None => true,
                        Some((best_gpu, best_cpu, _, _)) => {
                            (free_gpu, free_cpu) < (*best_gpu, *best_cpu)
                        }
                    };
                    if better {
                        best = Some((free_gpu, free_cpu, node_id.clone(), gpus));
                    }
                }
                Err(shortfall) => reasons.push((node_id.clone(), shortfall)),
            }
        }
        let Some((_, _, node_id, gpus)) = best else {
            return Err(PlacementError::Busy(summarize(&reasons, false)));
        };
        let allocation = Allocation {
            node_id,
            cpu_milli: request.cpu_milli,
            memory_bytes: request.memory_bytes,
            gpus,
            custom: request.custom.clone(),
        };
        self.apply(&allocation);
        Ok(allocation)
    }

    fn apply(&mut self, allocation: &Allocation) {
        let Some(slot) = self.nodes.get_mut(&allocation.node_id) else {
            return;
        };
        slot.used_cpu_milli += allocation.cpu_milli;
        slot.used_memory_bytes += allocation.memory_bytes;
        for share in &allocation.gpus {
            if let Some(position) = slot.gpu_position(share.index) {
                slot.used_gpu_milli[position] += share.milli;
            }
        }
        for (name, amount) in &allocation.custom {
            *slot.used_custom.entry(name.clone()).or_insert(0.0) += amount;
        }
    }

    /// Gives an allocation back. Releasing on a node that was removed is a no-op.
    pub fn release(&mut self, allocation: &Allocation) {
        let Some(slot) = self.nodes.get_mut(&allocation.node_id) else {
            return;
        };
        slot.used_cpu_milli = slot.used_cpu_milli.saturating_sub(allocation.cpu_milli);
        slot.used_memory_bytes = slot
            .used_memory_bytes
            .saturating_sub(allocation.memory_bytes);
        for share in &allocation.gpus {
            if let Some(position) = slot.gpu_position(share.index) {
                slot.used_gpu_milli[position] =
                    slot.used_gpu_milli[position].saturating_sub(share.milli);
            }
        }
        for (name, amount) in &allocation.custom {
            if let Some(used) = slot.used_custom.get_mut(name) {
                *used = (*used - amount).max(0.0);
            }
        }
    }
}

fn summarize(reasons: &[(String, Shortfall)], infeasible: bool) -> String {
    if reasons.is_empty() {
        return "no schedulable node".to_string();
    }
    let mut parts: Vec<String> = reasons
        .iter()
        .take(4)
        .map(|(node, shortfall)| format!("node {node}: {shortfall}"))
        .collect();
    if reasons.len() > 4 {
        parts.push(format!("and {} more nodes", reasons.len() - 4));
    }
    let lead = if infeasible {
        "no node could ever hold it"
    } else {
        "every node is short"
    };
    format!("{lead} ({})", parts.join("; "))
}

#[cfg(test)]
mod tests;
