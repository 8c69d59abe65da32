//! Pending demand for autoscalers: the requests of everything pending, in queue order (a gang
//! or a group as one all-or-nothing set, with its priority; job entrypoints after them), handed to the scheduler, which
//! reports what would not fit on the cluster as it is; and the autoscaler's view of a node
//! (what holds it) and of a node it stopped.

use super::{request_of, HeadState, Pending};
use crate::autoscaler::PendingSet;
use crate::scheduler::{Demand, NodeCapacity, PlacementError, Request, Scheduler, Strategy};
use std::collections::BTreeSet;

impl HeadState {
    /// What waits to be placed, in queue order: one set per actor, gang or group.
    pub fn pending_sets(&self) -> Vec<PendingSet> {
        let mut sets = Vec::new();
        let mut gangs = BTreeSet::new();
        for (item, _) in self.pending.ordered() {
            match item {
                Pending::Actor(id) => {
                    let Some(actor) = self.actors.get(&id) else {
                        continue;
                    };
                    if !actor.spec.placement_group_id.is_empty() {
                        continue; // its group's bundles are the demand
                    }
                    let (name, bundles) = if actor.spec.gang.is_empty() {
                        {
                            let name = if actor.spec.name.is_empty() {
                                &id
                            } else {
                                &actor.spec.name
                            };
                            (format!("actor {name}"), vec![request_of(&actor.spec)])
                        }
                    } else if gangs.insert(actor.spec.gang.clone()) {
                        let members: Vec<Request> = self
                            .actors
                            .values()
                            .filter(|a| {
                                a.spec.gang == actor.spec.gang
                                    && a.allocation.is_none()
                                    && a.info.state() != super::ActorState::Dead
                            })
                            .map(|a| request_of(&a.spec))
                            .collect();
                        (format!("gang {}", actor.spec.gang), members)
                    } else {
                        continue;
                    };
                    sets.push(PendingSet {
                        name,
                        bundles,
                        strategy: Strategy::Pack,
                        priority: actor.spec.priority,
                        preemptible: actor.spec.preemptible,
                    });
                }
                Pending::Group(id) => {
                    if let Some(group) = self.groups.get(&id) {
                        sets.push(PendingSet {
                            name: format!("placement group {id}"),
                            bundles: group.missing_bundles(),
                            strategy: group.strategy,
                            priority: group.spec.priority,
                            preemptible: group.spec.preemptible,
                        });
                    }
                }
            }
        }
        for id in &self.pending_jobs {
            let Some(spec) = self.jobs.get(id).and_then(|job| job.info.spec.as_ref()) else {
                continue;
            };
            sets.push(PendingSet {
                name: format!("job {id}"),
                bundles: vec![super::jobs::request_of_job(spec)],
                strategy: Strategy::Pack,
                priority: 0,
                preemptible: false,
            });
        }
        sets
    }

    /// Tells the state which node types an autoscaler may add: (name, capacity, max count).
    pub fn set_node_types(&mut self, types: &[(String, NodeCapacity, u32)]) {
        let mut probe = Scheduler::new();
        for (name, capacity, max) in types {
            for i in 0..(*max).min(64) {
                probe.add_node(&format!("{name}#{i}"), capacity.clone());
            }
        }
        self.node_type_probe = Some(probe);
    }

    /// Whether some node, now or once the autoscaler launches it, could ever hold `request`.
    pub(super) fn could_ever_fit(&self, request: &Request) -> Result<(), PlacementError> {
        let now = self.scheduler.check_feasible(request);
        match (&now, &self.node_type_probe) {
            (Err(PlacementError::Infeasible(reason)), Some(probe)) => {
                probe.check_feasible(request).map_err(|typed| {
                    PlacementError::Infeasible(format!(
                        "{reason}; no autoscaler node type could hold it either: {typed}"
                    ))
                })
            }
            _ => now,
        }
    }

    /// As `could_ever_fit`, for a group's bundles under its strategy.
    pub(super) fn could_ever_fit_group(
        &self,
        bundles: &[Request],
        strategy: Strategy,
    ) -> Result<(), PlacementError> {
        let now = self.scheduler.check_group_feasible(bundles, strategy);
        match (&now, &self.node_type_probe) {
            (Err(PlacementError::Infeasible(reason)), Some(probe)) => probe
                .check_group_feasible(bundles, strategy)
                .map_err(|typed| {
                    PlacementError::Infeasible(format!(
                        "{reason}; no autoscaler node types could hold it either: {typed}"
                    ))
                }),
            _ => now,
        }
    }

    /// What would have to be added to place everything pending.
    pub fn pending_demand(&mut self) -> Demand {
        let items: Vec<(Vec<Request>, Strategy)> = self
            .pending_sets()
            .into_iter()
            .map(|set| (set.bundles, set.strategy))
            .collect();
        self.scheduler.pending_demand(&items)
    }

    /// Whether anything (an actor, a job, a group's reservation) holds resources on a node.
    pub fn node_holds_anything(&self, node_id: &str) -> bool {
        self.scheduler.holds_anything(node_id)
    }

    /// A node the autoscaler drained and stopped leaves the cluster. It should hold nothing;
    /// anything it does hold is failed (and restarted elsewhere) as on any node's death.
    pub fn retire_node(&mut self, node_id: &str, now: std::time::Instant) -> Vec<super::Order> {
        if let Some(launch) = self.nodes.get(node_id).and_then(|node| {
            node.resources
                .labels
                .get(crate::autoscaler::config::LAUNCH_ID_LABEL)
        }) {
            self.retired_launches.insert(launch.clone());
        }
        let reason = format!("node {node_id} was stopped by the autoscaler");
        let mut orders = self.take_node_out(node_id, &reason, now);
        orders.extend(self.schedule(now));
        orders
    }
}
