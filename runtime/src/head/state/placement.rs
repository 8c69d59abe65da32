//! Placing pending actors: each lone actor on its own, each gang (the members of an ActorGroup)
//! all at once or not at all; placed actors get a new incarnation and a start order.

use super::{request_of, ActorState, HeadState, Order};
use crate::scheduler::{Allocation, Strategy};
use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;
use troupe_proto::{GpuAssignment, StartWorkerRequest};

impl HeadState {
    /// Whether some pending actor's back-off has run out (the head then calls `schedule`).
    pub fn backoff_expired(&self, now: Instant) -> bool {
        self.pending.iter().any(|id| {
            self.actors
                .get(id)
                .and_then(|actor| actor.not_before)
                .is_some_and(|not_before| not_before <= now)
        })
    }

    /// Places what it can from the pending queue, in order.
    pub fn schedule(&mut self, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut still_pending = VecDeque::new();
        let mut gangs_tried = BTreeSet::new();
        while let Some(actor_id) = self.pending.pop_front() {
            let Some(actor) = self.actors.get_mut(&actor_id) else {
                continue;
            };
            if !matches!(
                actor.info.state(),
                ActorState::Pending | ActorState::Restarting
            ) {
                continue;
            }
            if let Some(not_before) = actor.not_before {
                if not_before > now {
                    still_pending.push_back(actor_id);
                    continue;
                }
                actor.not_before = None;
            }
            let gang = actor.spec.gang.clone();
            if !gang.is_empty() && actor.info.incarnation == 0 {
                // A gang's first placement is all or nothing; its members restart one by one.
                if gangs_tried.insert(gang.clone()) {
                    orders.extend(self.place_gang(&gang, now));
                }
                if self
                    .actors
                    .get(&actor_id)
                    .is_some_and(|a| a.info.state() == ActorState::Pending)
                {
                    still_pending.push_back(actor_id);
                }
                continue;
            }
            match self.scheduler.place(&request_of(&actor.spec)) {
                Ok(allocation) => orders.extend(self.launch(&actor_id, allocation, now)),
                Err(err) => {
                    actor.info.pending_reason = err.to_string();
                    still_pending.push_back(actor_id);
                }
            }
        }
        self.pending = still_pending;
        orders.extend(self.place_jobs(now));
        orders
    }

    /// Places every member of `gang` or none: on a copy of the scheduler first, committed only if
    /// all fit.
    fn place_gang(&mut self, gang: &str, now: Instant) -> Vec<Order> {
        let mut members: Vec<(String, String)> = self
            .actors
            .values()
            .filter(|actor| actor.spec.gang == gang && actor.info.state() != ActorState::Dead)
            .map(|actor| (actor.info.id.clone(), actor.info.name.clone()))
            .collect();
        members.sort();
        let expected = self
            .actors
            .values()
            .find(|actor| actor.spec.gang == gang)
            .map(|actor| actor.spec.gang_size as usize)
            .unwrap_or(0);
        let waiting = members.iter().all(|(id, _)| {
            self.actors
                .get(id)
                .is_some_and(|a| a.info.state() == ActorState::Pending && a.info.incarnation == 0)
        });
        if members.len() < expected || !waiting {
            let why = format!(
                "gang {gang}: {} of {expected} members created so far",
                members.len()
            );
            self.note_pending(&members, &why);
            return Vec::new();
        }
        let requests: Vec<_> = members
            .iter()
            .map(|(id, _)| request_of(&self.actors[id].spec))
            .collect();
        let allocations = match self.scheduler.place_all(&requests, Strategy::Pack) {
            Ok(allocations) => allocations,
            Err(err) => {
                let why = format!("gang {gang}: placed all together or not at all: {err}");
                self.note_pending(&members, &why);
                return Vec::new();
            }
        };
        let mut orders = Vec::new();
        for ((id, _), allocation) in members.iter().zip(allocations) {
            orders.extend(self.launch(id, allocation, now));
        }
        orders
    }

    fn note_pending(&mut self, members: &[(String, String)], why: &str) {
        for (id, _) in members {
            if let Some(actor) = self.actors.get_mut(id) {
                actor.info.pending_reason = why.to_string();
            }
        }
    }

    /// Records a placement (the allocation is already taken) and orders the worker started.
    fn launch(&mut self, actor_id: &str, allocation: Allocation, now: Instant) -> Option<Order> {
        let Some(node_address) = self
            .nodes
            .get(&allocation.node_id)
            .map(|node| node.address.clone())
        else {
            self.scheduler.release(&allocation);
            return None;
        };
        let actor = self.actors.get_mut(actor_id)?;
        if let Some(queued_at) = actor.queued_at.take() {
            self.counters
                .scheduling_latency
                .observe(now.duration_since(queued_at).as_secs_f64());
        }
        actor.info.incarnation += 1;
        actor.info.state = ActorState::Starting as i32;
        actor.info.node_id = allocation.node_id.clone();
        actor.info.node_address = node_address.clone();
        actor.info.worker_address.clear();
        actor.info.pending_reason.clear();
        actor.alive_since = None;
        actor.info.gpus = allocation
            .gpus
            .iter()
            .map(|share| GpuAssignment {
                index: share.index,
                milli: share.milli,
            })
            .collect();
        let request = StartWorkerRequest {
            actor_id: actor_id.to_string(),
            incarnation: actor.info.incarnation,
            binary_hash: actor.spec.binary_hash.clone(),
            args: actor.spec.worker_args.clone(),
            env: actor.spec.env.clone(),
            gpu_ids: allocation.gpus.iter().map(|share| share.index).collect(),
            cpu_milli: allocation.cpu_milli,
            owner_session: actor.spec.owner_session.clone(),
        };
        actor.allocation = Some(allocation);
        Some(Order::Start {
            node_address,
            request,
        })
    }
}
