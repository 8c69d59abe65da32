//! Preemption in the head: when a pending request fits nowhere, the scheduler plans which
//! lower-priority, preemptible holders to evict (whole gangs and groups only); their workers get
//! a grace period to stop, they go back to the pending queue keeping their age, and the request
//! is placed on the freed resources in the same pass.

use super::placement::Outcome;
use super::{ActorState, HeadState, Order, Pending};
use crate::scheduler::{Claim, Request, Strategy};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use troupe_proto::PlacementGroupState;

/// How long an evicted worker has to stop before it is killed.
pub(crate) const PREEMPTION_GRACE: Duration = Duration::from_secs(2);

/// A start held back until the workers evicted for it are gone (so that, on a GPU, the two
/// never share device memory), or until the grace period and a margin have passed.
pub(crate) struct DeferredStart {
    /// (actor, incarnation) of the evicted workers still running.
    pub victims: Vec<(String, u64)>,
    pub until: Instant,
    pub order: Order,
}

impl HeadState {
    /// Evicts what the scheduler picks so that `item` fits, then places it. `None` when no
    /// eviction would make room.
    pub(super) fn preempt_for(
        &mut self,
        item: &Pending,
        bundles: &[Request],
        strategy: Strategy,
        claim: Claim,
        avoid: &[String],
        now: Instant,
    ) -> Option<(bool, Vec<Order>)> {
        let now_s = self.clock_s(now);
        let victims = self
            .scheduler
            .plan_preemption(bundles, strategy, claim, now_s, avoid)?;
        let who = match item {
            Pending::Actor(id) => format!("actor {id}"),
            Pending::Group(id) => format!("placement group {id}"),
        };
        let reason = format!("preempted by {who} (priority {})", claim.priority);
        tracing::info!(by = %who, victims = ?victims, "preempting");
        let mut orders = Vec::new();
        for victim in &victims {
            orders.extend(self.evict(victim, &reason, now));
        }
        self.counters.preemptions_total += victims.len() as u64;
        let stopping: Vec<(String, u64)> = orders
            .iter()
            .filter_map(|order| match order {
                Order::Stop {
                    actor_id,
                    incarnation,
                    ..
                } => Some((actor_id.clone(), *incarnation)),
                _ => None,
            })
            .collect();
        let outcome = match item {
            Pending::Actor(id) => self.try_actor(id, now, &mut BTreeSet::new()),
            Pending::Group(id) => self.try_group(id, now),
        };
        let placed = matches!(outcome, Outcome::Placed(_));
        if !placed {
            tracing::warn!(by = %who, "evicted for a request that then did not fit");
        }
        if let Outcome::Placed(more) = outcome {
            for order in more {
                match order {
                    Order::Start { .. } if !stopping.is_empty() => {
                        self.deferred_starts.push(DeferredStart {
                            victims: stopping.clone(),
                            until: now + PREEMPTION_GRACE + Duration::from_secs(3),
                            order,
                        })
                    }
                    other => orders.push(other),
                }
            }
        }
        Some((placed, orders))
    }

    /// A worker exited: starts that waited only for it go out now.
    pub fn victim_exited(&mut self, actor_id: &str, incarnation: u64) -> Vec<Order> {
        for deferred in &mut self.deferred_starts {
            deferred
                .victims
                .retain(|(id, inc)| !(id == actor_id && *inc == incarnation));
        }
        self.release_deferred(Instant::now(), false)
    }

    /// Whether a held-back start has waited out its grace period.
    pub fn deferred_due(&self, now: Instant) -> bool {
        self.deferred_starts.iter().any(|d| d.until <= now)
    }

    /// Sends the held-back starts whose victims are gone (or, with `expired`, whose time is up),
    /// dropping those whose actor moved on meanwhile.
    pub fn release_deferred(&mut self, now: Instant, expired: bool) -> Vec<Order> {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred_starts)
            .into_iter()
            .partition(|d| d.victims.is_empty() || (expired && d.until <= now));
        self.deferred_starts = waiting;
        ready
            .into_iter()
            .filter(|d| match &d.order {
                Order::Start { request, .. } => {
                    self.actors.get(&request.actor_id).is_some_and(|a| {
                        a.info.incarnation == request.incarnation
                            && a.info.state() == ActorState::Starting
                    })
                }
                _ => true,
            })
            .map(|d| d.order)
            .collect()
    }

    /// Frees a holder (an actor, a gang or a placement group) and sends its actors back to the
    /// pending queue, their workers told to stop within the grace period.
    fn evict(&mut self, holder: &str, reason: &str, now: Instant) -> Vec<Order> {
        self.scheduler.release_holder(holder);
        let actors: Vec<String> = if let Some(gang) = holder.strip_prefix("gang:") {
            self.actors
                .values()
                .filter(|a| a.spec.gang == gang)
                .map(|a| a.info.id.clone())
                .collect()
        } else if let Some(group_id) = holder.strip_prefix("pg:") {
            if let Some(group) = self.groups.get_mut(group_id) {
                group.placed.iter_mut().for_each(|p| *p = None);
                group.tenants.clear();
                group.info.state = PlacementGroupState::PlacementGroupRescheduling as i32;
                group.info.reschedules += 1;
                group.info.pending_reason = reason.to_string();
                group.queued_at = now;
                let (seq, priority) = (group.seq, group.spec.priority);
                self.pending
                    .push_with_seq(Pending::Group(group_id.to_string()), priority, seq);
            }
            self.actors
                .values()
                .filter(|a| a.spec.placement_group_id == group_id)
                .map(|a| a.info.id.clone())
                .collect()
        } else {
            vec![holder.to_string()]
        };
        let mut orders = Vec::new();
        for actor_id in actors {
            orders.extend(self.requeue_preempted(&actor_id, reason, now));
        }
        orders
    }

    /// One evicted actor: stop its worker (with grace) and queue it again with its old age.
    fn requeue_preempted(&mut self, actor_id: &str, reason: &str, now: Instant) -> Option<Order> {
        let actor = self.actors.get_mut(actor_id)?;
        if !matches!(actor.info.state(), ActorState::Starting | ActorState::Alive) {
            return None;
        }
        let stop = Order::Stop {
            node_address: actor.info.node_address.clone(),
            actor_id: actor_id.to_string(),
            incarnation: actor.info.incarnation,
            grace_ms: PREEMPTION_GRACE.as_millis() as u64,
        };
        actor.allocation = None;
        actor.gang_bundle = None;
        let incarnation = actor.info.incarnation;
        super::history::ended(
            &mut actor.info,
            incarnation,
            &format!("preempted: {reason}"),
            crate::logs::unix_ms_now(),
        );
        actor.info.state = ActorState::Pending as i32;
        actor.info.preemptions += 1;
        actor.info.pending_reason = reason.to_string();
        actor.info.worker_address.clear();
        actor.info.pid = 0;
        actor.info.gpus.clear();
        actor.alive_since = None;
        actor.queued_at = Some(now);
        actor.draining_until = Some(now + PREEMPTION_GRACE + Duration::from_secs(1));
        let (seq, priority) = (actor.seq, actor.spec.priority);
        self.pending
            .push_with_seq(Pending::Actor(actor_id.to_string()), priority, seq);
        Some(stop)
    }
}
