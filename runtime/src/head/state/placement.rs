//! Placing pending work: the pending queue is walked by priority, then age. A lone actor is a
//! scheduler holder of its own; the members of a gang (an ActorGroup) are one holder, placed all
//! at once; an actor inside a placement group takes its resources out of a bundle; a placement
//! group is placed by `groups.rs`. What fits nowhere may preempt lower-priority, preemptible
//! work (`preemption.rs`). Placed actors get a new incarnation and a start order.

use super::{request_of, ActorState, HeadState, Order, Pending};
use crate::scheduler::{Allocation, Claim, Pass, PlacementError, Request, Strategy};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use troupe_proto::{GpuAssignment, StartWorkerRequest};

/// A request that has waited this long, blocked, stops equal and lower priorities from passing
/// it (no starvation among equals).
pub(crate) const STARVE_AFTER: Duration = Duration::from_secs(5);

/// The scheduler holder of a gang.
pub(super) fn gang_holder(gang: &str) -> String {
    format!("gang:{gang}")
}

/// What a pending entry would need room for: its bundles, their strategy, its claim, and the
/// nodes it must avoid (those a STRICT_SPREAD group already holds).
pub(super) type Wanted = (Vec<Request>, Strategy, Claim, Vec<String>);

/// What one pending entry tried and how it went.
pub(super) enum Outcome {
    Placed(Vec<Order>),
    /// Not placed; what it waits for room for, when capacity is the problem (so it may preempt
    /// and, once starved, holds back equals).
    Waiting(Option<Wanted>),
    /// Nothing to do (gone, not due yet, or placed with its gang).
    Skip,
}

impl HeadState {
    /// Whether some pending actor's back-off has run out (the head then calls `schedule`).
    pub fn backoff_expired(&self, now: Instant) -> bool {
        self.pending.ordered().iter().any(|(item, _)| match item {
            Pending::Actor(id) => self
                .actors
                .get(id)
                .and_then(|actor| actor.not_before)
                .is_some_and(|not_before| not_before <= now),
            Pending::Group(_) => false,
        })
    }

    /// Seconds since the head started, as the scheduler's clock.
    pub(super) fn clock_s(&mut self, now: Instant) -> f64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs_f64()
    }

    /// Places what it can from the pending queue, highest priority first, then oldest; a
    /// request that fits nowhere may preempt lower-priority preemptible work.
    pub fn schedule(&mut self, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        // A group placed during a pass lets actors earlier in the queue (waiting for it) in:
        // pass again, a bounded number of times.
        for _ in 0..4 {
            let groups_before = self.groups_placed;
            self.schedule_pass(now, &mut orders);
            if self.groups_placed == groups_before {
                break;
            }
        }
        orders.extend(self.place_jobs(now));
        self.prune_dead_actors();
        orders
    }

    fn schedule_pass(&mut self, now: Instant, orders: &mut Vec<Order>) {
        let mut pass = Pass::default();
        let mut gangs_tried = BTreeSet::new();
        for (item, priority) in self.pending.ordered() {
            if !self.pending.contains(&item) {
                continue; // placed along with its gang, or evicted and requeued below.
            }
            let waited = self.waited(&item, now);
            if pass.held_back(priority) {
                self.note_item(
                    &item,
                    "waiting behind older work of equal or higher priority that has waited longer",
                );
                continue;
            }
            let outcome = match &item {
                Pending::Actor(id) => self.try_actor(id, now, &mut gangs_tried),
                Pending::Group(id) => self.try_group(id, now),
            };
            match outcome {
                Outcome::Placed(more) => orders.extend(more),
                Outcome::Skip => {}
                // Only a wait for capacity holds back equals once starved; waiting for a
                // group's room, a gang's bundle or a dead pinned node does not.
                Outcome::Waiting(Some(wanted)) => {
                    let (bundles, strategy, claim, avoid) = wanted;
                    if let Some((placed, more)) =
                        self.preempt_for(&item, &bundles, strategy, claim, &avoid, now)
                    {
                        orders.extend(more);
                        if placed {
                            continue;
                        }
                    }
                    pass.failed(priority, waited.as_secs_f64(), STARVE_AFTER.as_secs_f64());
                }
                Outcome::Waiting(None) => {}
            }
        }
    }

    fn waited(&self, item: &Pending, now: Instant) -> Duration {
        let since = match item {
            Pending::Actor(id) => self.actors.get(id).and_then(|a| a.queued_at),
            Pending::Group(id) => self.groups.get(id).map(|g| g.queued_at),
        };
        since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    fn note_item(&mut self, item: &Pending, why: &str) {
        match item {
            Pending::Actor(id) => self.note_actor(id, why),
            Pending::Group(id) => {
                if self
                    .groups
                    .get(id)
                    .is_some_and(|group| group.info.pending_reason != why)
                {
                    if let Some(group) = self.groups.get_mut(id) {
                        group.info.pending_reason = why.to_string();
                    }
                }
            }
        }
    }

    /// Sets why an actor waits. Its record counts as changed (and goes to disk) only when the
    /// words do: every scheduling pass says why each waiting actor still waits.
    pub(super) fn note_actor(&mut self, id: &str, why: &str) {
        if self
            .actors
            .get(id)
            .is_some_and(|actor| actor.info.pending_reason != why)
        {
            if let Some(actor) = self.actors.get_mut(id) {
                actor.info.pending_reason = why.to_string();
            }
        }
    }

    pub(super) fn try_actor(
        &mut self,
        actor_id: &str,
        now: Instant,
        gangs_tried: &mut BTreeSet<String>,
    ) -> Outcome {
        let Some(actor) = self.actors.get(actor_id) else {
            self.pending.remove(&Pending::Actor(actor_id.to_string()));
            return Outcome::Skip;
        };
        if !matches!(
            actor.info.state(),
            ActorState::Pending | ActorState::Restarting
        ) {
            self.pending.remove(&Pending::Actor(actor_id.to_string()));
            return Outcome::Skip;
        }
        if let Some(not_before) = actor.not_before {
            if not_before > now {
                return Outcome::Skip;
            }
            // The back-off is not part of the record on disk.
            if let Some(actor) = self.actors.get_mut_untracked(actor_id) {
                actor.not_before = None;
            }
        }
        let Some(actor) = self.actors.get(actor_id) else {
            return Outcome::Skip;
        };
        if !actor.spec.placement_group_id.is_empty() {
            return self.place_in_group(actor_id, now);
        }
        let gang = actor.spec.gang.clone();
        let claim = Claim {
            priority: actor.spec.priority,
            preemptible: actor.spec.preemptible,
            since_s: 0.0,
        };
        if !gang.is_empty() {
            let holder = gang_holder(&gang);
            if self.scheduler.holder_allocations(&holder).is_none() {
                // A gang is placed all or nothing (also after being preempted).
                if !gangs_tried.insert(gang.clone()) {
                    return Outcome::Skip;
                }
                return self.place_gang(&gang, claim, now);
            }
            return self.place_gang_member(actor_id, &holder, now);
        }
        let request = request_of(&actor.spec);
        let claim = Claim {
            since_s: self.clock_s(now),
            ..claim
        };
        match self.scheduler.place_group(
            actor_id,
            std::slice::from_ref(&request),
            Strategy::Pack,
            claim,
        ) {
            Ok(mut allocations) => {
                self.pending.remove(&Pending::Actor(actor_id.to_string()));
                let allocation = allocations.remove(0);
                Outcome::Placed(self.launch(actor_id, allocation, now).into_iter().collect())
            }
            Err(err) => {
                self.note_actor(actor_id, &err.to_string());
                Outcome::Waiting(preemptable(&err, vec![request], Strategy::Pack, claim))
            }
        }
    }

    /// Places every member of `gang` or none, as one scheduler holder.
    fn place_gang(&mut self, gang: &str, claim: Claim, now: Instant) -> Outcome {
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
            self.actors.get(id).is_some_and(|a| {
                matches!(a.info.state(), ActorState::Pending | ActorState::Restarting)
                    && a.not_before.is_none_or(|t| t <= now)
            })
        });
        if members.len() < expected || !waiting {
            let why = format!(
                "gang {gang}: {} of {expected} members created and waiting so far",
                members.len()
            );
            self.note_members(&members, &why);
            return Outcome::Skip;
        }
        let requests: Vec<Request> = members
            .iter()
            .map(|(id, _)| request_of(&self.actors[id].spec))
            .collect();
        let claim = Claim {
            since_s: self.clock_s(now),
            ..claim
        };
        let holder = gang_holder(gang);
        match self
            .scheduler
            .place_group(&holder, &requests, Strategy::Pack, claim)
        {
            Ok(allocations) => {
                let mut orders = Vec::new();
                for (bundle, ((id, _), allocation)) in members.iter().zip(allocations).enumerate() {
                    self.pending.remove(&Pending::Actor(id.clone()));
                    if let Some(actor) = self.actors.get_mut(id) {
                        actor.gang_bundle = Some(bundle);
                    }
                    orders.extend(self.launch(id, allocation, now));
                }
                Outcome::Placed(orders)
            }
            Err(err) => {
                let why = format!("gang {gang}: placed all together or not at all: {err}");
                self.note_members(&members, &why);
                Outcome::Waiting(preemptable(&err, requests, Strategy::Pack, claim))
            }
        }
    }

    /// A gang member restarting alone gets its own bundle of the gang back.
    fn place_gang_member(&mut self, actor_id: &str, holder: &str, now: Instant) -> Outcome {
        let Some(actor) = self.actors.get(actor_id) else {
            return Outcome::Skip;
        };
        let Some(bundle) = actor.gang_bundle else {
            if let Some(actor) = self.actors.get_mut(actor_id) {
                actor.info.pending_reason =
                    "its gang was placed without it (more members than the gang's size)".into();
            }
            return Outcome::Waiting(None);
        };
        let request = request_of(&actor.spec);
        let claim = self.scheduler.holder_claim(holder).unwrap_or_default();
        match self.scheduler.place_lost_bundle(holder, bundle) {
            Ok(allocation) => {
                self.pending.remove(&Pending::Actor(actor_id.to_string()));
                Outcome::Placed(self.launch(actor_id, allocation, now).into_iter().collect())
            }
            Err(err) => {
                self.note_actor(actor_id, &format!("gang member's bundle: {err}"));
                Outcome::Waiting(preemptable(&err, vec![request], Strategy::Pack, claim))
            }
        }
    }

    fn note_members(&mut self, members: &[(String, String)], why: &str) {
        for (id, _) in members {
            self.note_actor(id, why);
        }
    }

    /// Gives back what an actor holds: to its placement-group bundle, its gang's holder, or the
    /// scheduler.
    pub(super) fn release_actor(&mut self, actor_id: &str) {
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return;
        };
        let Some(allocation) = actor.allocation.take() else {
            return;
        };
        if !actor.spec.placement_group_id.is_empty() {
            let group_id = actor.spec.placement_group_id.clone();
            if let Some(group) = self.groups.get_mut(&group_id) {
                group.give_back(actor_id);
            }
        } else if !actor.spec.gang.is_empty() {
            let holder = gang_holder(&actor.spec.gang);
            match actor.gang_bundle {
                Some(bundle) => {
                    self.scheduler.release_bundle(&holder, bundle);
                }
                None => self.scheduler.release(&allocation),
            }
            let gang = actor.spec.gang.clone();
            let all_dead = self
                .actors
                .values()
                .filter(|a| a.spec.gang == gang)
                .all(|a| a.info.state() == ActorState::Dead || a.allocation.is_none());
            if all_dead {
                self.scheduler.release_holder(&holder);
            }
        } else {
            self.scheduler.release_holder(actor_id);
        }
    }

    /// Records a placement (the allocation is already taken) and orders the worker started.
    pub(super) fn launch(
        &mut self,
        actor_id: &str,
        allocation: Allocation,
        now: Instant,
    ) -> Option<Order> {
        let Some(node_address) = self
            .nodes
            .get(&allocation.node_id)
            .map(|node| node.address.clone())
        else {
            // Not reachable while node records are kept; if it were, give the allocation back
            // where it came from and wait again.
            if let Some(actor) = self.actors.get_mut(actor_id) {
                actor.allocation = Some(allocation);
                let (seq, priority) = (actor.seq, actor.spec.priority);
                self.release_actor(actor_id);
                self.pending
                    .push_with_seq(Pending::Actor(actor_id.to_string()), priority, seq);
            }
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
        super::history::started(&mut actor.info, crate::logs::unix_ms_now());
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

/// The request to plan a preemption for, when waiting (not infeasibility) is the problem.
pub(super) fn preemptable(
    err: &PlacementError,
    bundles: Vec<Request>,
    strategy: Strategy,
    claim: Claim,
) -> Option<Wanted> {
    matches!(err, PlacementError::Busy(_)).then_some((bundles, strategy, claim, Vec::new()))
}
