//! Pending demand for autoscalers: the requests of everything pending, in queue order (a gang
//! or a group as one all-or-nothing set), handed to the scheduler, which reports what would
//! not fit on the cluster as it is.

use super::{request_of, HeadState, Pending};
use crate::scheduler::{Demand, Request, Strategy};
use std::collections::BTreeSet;

impl HeadState {
    /// What would have to be added to place everything pending.
    pub fn pending_demand(&mut self) -> Demand {
        let mut items: Vec<(Vec<Request>, Strategy)> = Vec::new();
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
                    if actor.spec.gang.is_empty() {
                        items.push((vec![request_of(&actor.spec)], Strategy::Pack));
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
                        items.push((members, Strategy::Pack));
                    }
                }
                Pending::Group(id) => {
                    if let Some(group) = self.groups.get(&id) {
                        items.push((group.missing_bundles(), group.strategy));
                    }
                }
            }
        }
        self.scheduler.pending_demand(&items)
    }
}
