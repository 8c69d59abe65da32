//! Actor transitions of the head's state: creation, placement from the pending queue, worker
//! failures and restarts (with back-off for actors that cannot start), kills, readiness, and the
//! end of the sessions that own actors.

use super::{request_of, short_id, ActorRecord, ActorState, Failure, HeadState, Order, Pending};
use crate::scheduler::PlacementError;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tonic::Status;
use troupe_proto::{ActorInfo, ActorSpec, CreateActorRequest};

/// First back-off for an actor whose workers keep dying before they are ready; it doubles with
/// each such death, up to `MAX_BACKOFF`. Two such deaths in a row are restarted at once.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FREE_FAILED_STARTS: u32 = 2;

fn backoff(failed_starts: u32) -> Option<Duration> {
    let doublings = failed_starts.checked_sub(FREE_FAILED_STARTS + 1)?;
    Some(
        FIRST_BACKOFF
            .saturating_mul(1 << doublings.min(16))
            .min(MAX_BACKOFF),
    )
}

impl HeadState {
    /// Shortly after a restart, an owner session the head has not heard from yet may be one
    /// that is reconnecting: it is taken, and must open its stream within the grace period.
    pub(super) fn adopt_session_after_restart(&mut self, session_id: &str, now: Instant) {
        let Some(until) = self.session_grace_until.filter(|until| *until > now) else {
            return;
        };
        if !session_id.is_empty() && self.sessions.insert(session_id.to_string()) {
            self.reconnecting_sessions
                .insert(session_id.to_string(), until);
        }
    }

    /// A session stream opened.
    pub fn open_session(&mut self, session_id: &str) {
        self.reconnecting_sessions.remove(session_id);
        self.sessions.insert(session_id.to_string());
    }

    /// Validates and records a new actor, then tries to place it.
    pub fn create_actor(
        &mut self,
        spec: CreateActorRequest,
        now: Instant,
    ) -> Result<(ActorInfo, Vec<Order>), Status> {
        if let Some(existing) = self
            .spawns
            .get(&spec.spawn_id)
            .and_then(|id| self.actors.get(id))
        {
            // The same spawn sent again (its answer was lost): the actor it created.
            return Ok((existing.info.clone(), Vec::new()));
        }
        self.adopt_session_after_restart(&spec.owner_session, now);
        if !spec.detached && !self.sessions.contains(&spec.owner_session) {
            return Err(Status::failed_precondition(format!(
                "owner session `{}` is not open (its driver or owning worker is gone); only a detached actor can outlive its owner",
                spec.owner_session
            )));
        }
        let request = request_of(&spec);
        if spec.placement_group_id.is_empty() {
            if let Err(PlacementError::Infeasible(reason)) = self.could_ever_fit(&request) {
                return Err(Status::failed_precondition(format!(
                    "cannot place actor of type {}: {reason}",
                    spec.type_name
                )));
            }
        } else {
            self.check_fits_group(&spec, &request)?;
        }
        self.scheduler.observe(&request);
        if !spec.name.is_empty() {
            if let Some(existing) = self.names.get(&spec.name) {
                return Err(Status::already_exists(format!(
                    "an actor named `{}` already exists ({existing})",
                    spec.name
                )));
            }
        }
        let id = short_id("actor");
        let info = ActorInfo {
            id: id.clone(),
            name: spec.name.clone(),
            type_name: spec.type_name.clone(),
            state: ActorState::Pending as i32,
            max_restarts: spec.max_restarts,
            detached: spec.detached,
            owner_session: spec.owner_session.clone(),
            resources: spec.resources.clone(),
            max_concurrency: spec.max_concurrency,
            priority: spec.priority,
            preemptible: spec.preemptible,
            placement_group_id: spec.placement_group_id.clone(),
            ..ActorInfo::default()
        };
        let seq = self.pending.push(Pending::Actor(id.clone()), spec.priority);
        if !spec.name.is_empty() {
            self.names.insert(spec.name.clone(), id.clone());
        }
        if !spec.spawn_id.is_empty() {
            self.spawns.insert(spec.spawn_id.clone(), id.clone());
        }
        self.actors.insert(
            id.clone(),
            ActorRecord {
                info,
                spec,
                allocation: None,
                queued_at: Some(now),
                alive_since: None,
                failed_starts: 0,
                not_before: None,
                seq,
                gang_bundle: None,
                draining_until: None,
            },
        );
        self.counters.actors_created_total += 1;
        let orders = self.schedule(now);
        let info = self.actors[&id].info.clone();
        Ok((info, orders))
    }

    /// A worker of `actor_id` is gone (exited, never started, or its node died). Restarts the
    /// actor if it has restarts left and the failure is not fatal; reports about another
    /// incarnation than the current one change nothing.
    pub fn worker_failed(
        &mut self,
        actor_id: &str,
        incarnation: u64,
        failure: Failure,
    ) -> Vec<Order> {
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return Vec::new();
        };
        if actor.info.incarnation != incarnation
            || matches!(
                actor.info.state(),
                ActorState::Dead | ActorState::Pending | ActorState::Restarting
            )
        {
            return Vec::new();
        }
        let mut orders = Vec::new();
        if failure.stop_worker && !actor.info.node_address.is_empty() {
            orders.push(Order::Stop {
                node_address: actor.info.node_address.clone(),
                actor_id: actor_id.to_string(),
                incarnation,
                grace_ms: 0,
            });
        }
        self.release_actor(actor_id);
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return orders;
        };
        super::history::ended(
            &mut actor.info,
            incarnation,
            &failure.reason,
            crate::logs::unix_ms_now(),
        );
        let never_ready = actor.info.state() == ActorState::Starting;
        actor.failed_starts = if never_ready {
            actor.failed_starts + 1
        } else {
            0
        };
        actor.info.worker_address.clear();
        actor.info.pid = 0;
        actor.info.gpus.clear();
        actor.alive_since = None;
        let restartable = !failure.fatal
            && (actor.info.max_restarts < 0
                || (actor.info.restarts as i64) < actor.info.max_restarts as i64);
        if restartable {
            let now = Instant::now();
            actor.info.restarts += 1;
            actor.info.state = ActorState::Restarting as i32;
            actor.info.death_reason = failure.reason;
            actor.queued_at = Some(now);
            actor.not_before = backoff(actor.failed_starts).map(|delay| now + delay);
            self.counters.restarts_total += 1;
            // Restarts keep their age: ahead of newer work of equal priority.
            let (seq, priority) = (actor.seq, actor.spec.priority);
            self.pending
                .push_with_seq(Pending::Actor(actor_id.to_string()), priority, seq);
            tracing::info!(
                actor = actor_id,
                restarts = actor.info.restarts,
                "restarting actor"
            );
        } else {
            let limit = actor.info.max_restarts;
            actor.info.state = ActorState::Dead as i32;
            actor.info.death_reason = if failure.fatal || limit == 0 {
                failure.reason
            } else {
                format!("{} (no restarts left of {limit})", failure.reason)
            };
            let name = actor.info.name.clone();
            self.forget_name(&name, actor_id);
        }
        orders.extend(self.schedule(Instant::now()));
        orders
    }

    /// Forgets the dead actors beyond the configured history, those created first going first.
    /// Only actors whose resources are released and that no preemption still waits for are
    /// forgotten. Cheap while the head holds fewer actors than the history.
    pub fn prune_dead_actors(&mut self) {
        let keep = self
            .dead_actor_history
            .unwrap_or(super::DEFAULT_DEAD_ACTOR_HISTORY);
        if self.actors.len() <= keep {
            return;
        }
        let awaited: HashSet<&str> = self
            .deferred_starts
            .iter()
            .flat_map(|start| start.victims.iter().map(|(actor, _)| actor.as_str()))
            .collect();
        let mut dead: Vec<(u64, String)> = self
            .actors
            .iter()
            .filter(|(id, actor)| {
                actor.info.state() == ActorState::Dead
                    && actor.allocation.is_none()
                    && !awaited.contains(id.as_str())
            })
            .map(|(id, actor)| (actor.seq, id.clone()))
            .collect();
        if dead.len() <= keep {
            return;
        }
        dead.sort_unstable();
        let forget = dead.len() - keep;
        for (_, id) in dead.into_iter().take(forget) {
            if let Some(actor) = self.actors.remove(&id) {
                self.spawns.remove(&actor.spec.spawn_id);
            }
        }
        tracing::debug!(forgotten = forget, kept = keep, "dead actors pruned");
    }

    /// Stops an actor for good (or lets it restart, if `allow_restart`).
    pub fn kill_actor(
        &mut self,
        actor_id: &str,
        allow_restart: bool,
        reason: &str,
    ) -> Result<Vec<Order>, Status> {
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return Err(Status::not_found(format!("no actor with id {actor_id}")));
        };
        if actor.info.state() == ActorState::Dead {
            return Ok(Vec::new());
        }
        let incarnation = actor.info.incarnation;
        let failure = Failure {
            reason: reason.to_string(),
            stop_worker: true,
            fatal: !allow_restart,
        };
        match actor.info.state() {
            ActorState::Pending | ActorState::Restarting if !allow_restart => {
                actor.info.state = ActorState::Dead as i32;
                actor.info.death_reason = reason.to_string();
                super::history::ended(
                    &mut actor.info,
                    incarnation,
                    reason,
                    crate::logs::unix_ms_now(),
                );
                let name = actor.info.name.clone();
                self.pending.remove(&Pending::Actor(actor_id.to_string()));
                self.forget_name(&name, actor_id);
                Ok(Vec::new())
            }
            _ => Ok(self.worker_failed(actor_id, incarnation, failure)),
        }
    }

    /// A worker asks for its constructor arguments.
    pub fn actor_spec(&self, actor_id: &str, incarnation: u64) -> Result<ActorSpec, Status> {
        let actor = self
            .actors
            .get(actor_id)
            .ok_or_else(|| Status::not_found(format!("no actor with id {actor_id}")))?;
        if actor.info.incarnation != incarnation || actor.info.state() != ActorState::Starting {
            return Err(Status::failed_precondition(format!(
                "actor {actor_id} incarnation {incarnation} is not starting (current incarnation {}, state {})",
                actor.info.incarnation,
                actor.info.state().as_str_name()
            )));
        }
        Ok(ActorSpec {
            actor_id: actor_id.to_string(),
            type_name: actor.spec.type_name.clone(),
            constructor_args: actor.spec.constructor_args.clone(),
            name: actor.spec.name.clone(),
            max_concurrency: actor.spec.max_concurrency,
            incarnation,
            owner_session: actor.spec.owner_session.clone(),
            node_id: actor.info.node_id.clone(),
        })
    }

    /// A worker reports its constructor outcome.
    pub fn worker_ready(
        &mut self,
        actor_id: &str,
        incarnation: u64,
        address: &str,
        pid: u32,
        constructor_error: &str,
    ) -> Result<Vec<Order>, Status> {
        let actor = self
            .actors
            .get_mut(actor_id)
            .ok_or_else(|| Status::not_found(format!("no actor with id {actor_id}")))?;
        // The same report again (its answer was lost): already done.
        if actor.info.incarnation == incarnation
            && actor.info.state() == ActorState::Alive
            && actor.info.pid == pid
            && actor.info.worker_address == address
            && constructor_error.is_empty()
        {
            return Ok(Vec::new());
        }
        if actor.info.incarnation != incarnation || actor.info.state() != ActorState::Starting {
            return Err(Status::failed_precondition(format!(
                "actor {actor_id} incarnation {incarnation} is stale (current {})",
                actor.info.incarnation
            )));
        }
        if !constructor_error.is_empty() {
            // The first constructor failing means bad arguments or code: running it again would
            // fail the same way. A restart's constructor may fail for passing reasons (a
            // checkpoint not written yet), so that one counts as an ordinary failure.
            let failure = Failure {
                reason: format!("constructor failed: {constructor_error}"),
                stop_worker: true,
                fatal: incarnation == 1,
            };
            return Ok(self.worker_failed(actor_id, incarnation, failure));
        }
        actor.info.state = ActorState::Alive as i32;
        actor.info.worker_address = address.to_string();
        actor.info.pid = pid;
        actor.alive_since = Some(Instant::now());
        Ok(Vec::new())
    }

    /// A session ended (its driver or worker is gone): stop its non-detached actors.
    pub fn session_closed(&mut self, session_id: &str) -> Vec<Order> {
        self.sessions.remove(session_id);
        let owned: Vec<String> = self
            .actors
            .values()
            .filter(|actor| {
                actor.info.owner_session == session_id
                    && !actor.info.detached
                    && actor.info.state() != ActorState::Dead
            })
            .map(|actor| actor.info.id.clone())
            .collect();
        let mut orders = Vec::new();
        for actor_id in owned {
            if let Ok(more) =
                self.kill_actor(&actor_id, false, "its owner (driver or actor) exited")
            {
                orders.extend(more);
            }
        }
        orders.extend(self.remove_session_groups(session_id, Instant::now()));
        orders
    }

    /// An actor asking for a placement group's bundle: the group must exist, the bundle index
    /// must be valid, and the request must fit in the bundle (or some bundle) when it is empty.
    fn check_fits_group(
        &self,
        spec: &CreateActorRequest,
        request: &crate::scheduler::Request,
    ) -> Result<(), Status> {
        let group = self.groups.get(&spec.placement_group_id).ok_or_else(|| {
            Status::not_found(format!(
                "no placement group with id {}",
                spec.placement_group_id
            ))
        })?;
        let candidates: Vec<usize> = match spec.bundle_index {
            Some(index) if index as usize >= group.bundles.len() => {
                return Err(Status::invalid_argument(format!(
                    "bundle_index {index}: placement group {} has {} bundles",
                    spec.placement_group_id,
                    group.bundles.len()
                )))
            }
            Some(index) => vec![index as usize],
            None => (0..group.bundles.len()).collect(),
        };
        let fits = |bundle: &crate::scheduler::Request| {
            request.cpu_milli <= bundle.cpu_milli
                && request.memory_bytes <= bundle.memory_bytes
                && (request.gpu_milli <= bundle.gpu_milli.min(1000)
                    || (request.gpu_milli >= 1000 && request.gpu_milli <= bundle.gpu_milli))
                && request.custom.iter().all(|(name, amount)| {
                    bundle.custom.get(name).is_some_and(|have| have >= amount)
                })
        };
        if candidates.iter().any(|index| fits(&group.bundles[*index])) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "cannot place actor of type {} in placement group {}: no bundle{} is big enough for it",
                spec.type_name,
                spec.placement_group_id,
                spec.bundle_index.map(|i| format!(" (asked for bundle {i})")).unwrap_or_default()
            )))
        }
    }

    /// Frees `name` for reuse if it still points at `actor_id` (which just died).
    fn forget_name(&mut self, name: &str, actor_id: &str) {
        if !name.is_empty() && self.names.get(name).is_some_and(|id| id == actor_id) {
            self.names.remove(name);
        }
    }

    /// Looks an actor up by id or name.
    pub fn find_actor(&self, id: &str, name: &str) -> Result<&ActorRecord, Status> {
        if !id.is_empty() {
            return self
                .actors
                .get(id)
                .ok_or_else(|| Status::not_found(format!("no actor with id {id}")));
        }
        let id = self
            .names
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no live actor named `{name}`")))?;
        self.actors
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no live actor named `{name}`")))
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_starts_after_two_failed_starts_and_is_capped() {
        assert_eq!(backoff(0), None);
        assert_eq!(backoff(2), None);
        assert_eq!(backoff(3), Some(FIRST_BACKOFF));
        assert_eq!(backoff(4), Some(FIRST_BACKOFF * 2));
        assert_eq!(backoff(40), Some(MAX_BACKOFF));
    }
}
