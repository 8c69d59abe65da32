//! Pending demand: what would have to be added to the cluster so that everything pending could
//! be placed. Computed by placing the pending requests, in queue order, on the live state and
//! collecting what does not fit; every trial placement is undone. An autoscaler reads it.

use super::resources::{Allocation, Request};
use super::strategy::Strategy;
use super::Scheduler;

/// One unplaceable request shape and how many of it are waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandItem {
    pub request: Request,
    pub count: u64,
}

/// What pending work still needs, beyond what the cluster has free.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Demand {
    pub items: Vec<DemandItem>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpu_milli: u64,
}

impl Scheduler {
    /// Places `pending` (groups of bundles, in queue order) on trial and reports the bundles of
    /// every group that did not fit. Nothing is changed.
    pub fn pending_demand(&mut self, pending: &[(Vec<Request>, Strategy)]) -> Demand {
        let mut demand = Demand::default();
        let mut trial: Vec<Allocation> = Vec::new();
        for (bundles, strategy) in pending {
            match self.place_all(bundles, *strategy) {
                Ok(placed) => trial.extend(placed),
                Err(_) => {
                    for bundle in bundles {
                        let mut shape = bundle.clone();
                        shape.node_affinity = None;
                        demand.cpu_milli += bundle.cpu_milli;
                        demand.memory_bytes += bundle.memory_bytes;
                        demand.gpu_milli += bundle.gpu_milli;
                        match demand.items.iter_mut().find(|item| item.request == shape) {
                            Some(item) => item.count += 1,
                            None => demand.items.push(DemandItem {
                                request: shape,
                                count: 1,
                            }),
                        }
                    }
                }
            }
        }
        for allocation in &trial {
            self.release(allocation);
        }
        demand
    }

    /// Places every bundle or none, not tied to a holder (released with `release`); allocations
    /// come back in bundle order.
    pub fn place_all(
        &mut self,
        bundles: &[Request],
        strategy: Strategy,
    ) -> Result<Vec<Allocation>, super::PlacementError> {
        self.check_group_feasible(bundles, strategy)?;
        let all: Vec<usize> = (0..bundles.len()).collect();
        let placed = self.place_bundles(bundles, &all, strategy, &[])?;
        Ok(placed
            .into_iter()
            .map(|(_, allocation)| allocation)
            .collect())
    }
}
