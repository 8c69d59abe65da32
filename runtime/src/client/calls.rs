//! The call path: find where an actor's worker listens (asking the head, waiting for it to be
//! ready), send the call over that worker's stream, and turn every failure into an error that
//! names the actor, its node and the method, and says whether a restart is coming.

use super::Client;
use crate::actor::ActorRef;
use crate::error::{ActorDeath, Error, RemotePanic, Result};
use crate::transport::{CallOutcome, Connection, LinkError};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_proto::{ActorInfo, ActorState, CallFailure, FailureKind, GetActorRequest};

/// Where one incarnation of an actor serves calls.
pub(crate) struct Route {
    incarnation: u64,
    node_id: String,
    connection: Arc<Connection>,
}

/// An incarnation known to be going away: the next call waits for a later one.
pub(crate) type Dying = std::collections::HashMap<String, u64>;

/// How long, after a call stream broke, the caller waits for the head to learn of the death:
/// longer than the head's default node timeout (5 s), so a whole node's loss is seen too.
const DEATH_NOTICE_WAIT: Duration = Duration::from_secs(7);

impl Client {
    /// Calls `method` on `actor`.
    pub(crate) async fn call(
        &self,
        actor: &ActorRef,
        method: u32,
        method_name: &str,
        args: Bytes,
    ) -> Result<Bytes> {
        let route = self.route(actor).await?;
        let outcome = match route.connection.call(method, args).await {
            Ok(CallOutcome::Failed(failure)) if failure.kind() == FailureKind::Exiting => {
                Err(LinkError(failure.message))
            }
            other => other,
        };
        match outcome {
            Ok(CallOutcome::Ok(reply)) => Ok(reply),
            Ok(CallOutcome::Failed(failure)) => {
                if failure.kind() == FailureKind::Panic {
                    self.forget_route(actor.id(), route.incarnation);
                    self.mark_dying(actor.id(), route.incarnation);
                }
                Err(failure_error(actor, &route.node_id, method_name, failure))
            }
            Err(LinkError(reason)) => {
                self.forget_route(actor.id(), route.incarnation);
                let (restarting, reason) =
                    self.death_notice(actor, route.incarnation, reason).await;
                Err(Error::Died(Box::new(ActorDeath {
                    actor: actor.id().to_string(),
                    type_name: actor.type_name().to_string(),
                    node: route.node_id.clone(),
                    method: method_name.to_string(),
                    reason,
                    restarting,
                })))
            }
        }
    }

    /// Waits until the actor is ALIVE (or fails if it is dead or not ready in time).
    pub(crate) async fn wait_ready(
        &self,
        actor: &ActorRef,
        timeout: Duration,
    ) -> Result<ActorInfo> {
        let started = Instant::now();
        let mut actors = self.actors.clone();
        let dying = self.dying_incarnation(actor.id());
        let request = GetActorRequest {
            id: actor.id().to_string(),
            wait_ready: true,
            wait_past_incarnation: dying.is_some(),
            incarnation: dying.unwrap_or(0),
            timeout_ms: timeout.as_millis() as u64,
            ..GetActorRequest::default()
        };
        let info =
            tokio::time::timeout(timeout + Duration::from_secs(5), actors.get_actor(request))
                .await
                .map_err(|_| not_ready(actor, started, "the head did not answer".to_string()))?
                .map_err(|status| Error::rpc(format!("looking up actor {}", actor.id()), status))?
                .into_inner();
        match info.state() {
            ActorState::Alive if dying != Some(info.incarnation) => {
                self.clear_dying(actor.id(), info.incarnation);
                Ok(info)
            }
            ActorState::Dead => Err(Error::Dead {
                actor: actor.id().to_string(),
                type_name: actor.type_name().to_string(),
                reason: info.death_reason,
            }),
            state => {
                let mut detail = format!("state {}", state.as_str_name());
                if !info.pending_reason.is_empty() {
                    detail.push_str(&format!(" ({})", info.pending_reason));
                }
                Err(not_ready(actor, started, detail))
            }
        }
    }

    async fn route(&self, actor: &ActorRef) -> Result<Arc<Route>> {
        if let Some(route) = self.live_route(actor.id()) {
            return Ok(route);
        }
        let lookup = self
            .lookups
            .lock()
            .map(|mut lookups| lookups.entry(actor.id().to_string()).or_default().clone())
            .unwrap_or_default();
        let _one_at_a_time = lookup.lock().await;
        if let Some(route) = self.live_route(actor.id()) {
            return Ok(route); // found by the lookup this call waited for
        }
        let info = self.wait_ready(actor, self.ready_timeout).await?;
        let connection = match self.connection(&info.worker_address).await {
            Ok(connection) => connection,
            Err(LinkError(reason)) => {
                // The head still lists the worker, but it does not answer: it is going away.
                self.mark_dying(actor.id(), info.incarnation);
                let (restarting, reason) = self.death_notice(actor, info.incarnation, reason).await;
                return Err(Error::Died(Box::new(ActorDeath {
                    actor: actor.id().to_string(),
                    type_name: actor.type_name().to_string(),
                    node: info.node_id.clone(),
                    method: "(connect)".to_string(),
                    reason,
                    restarting,
                })));
            }
        };
        let route = Arc::new(Route {
            incarnation: info.incarnation,
            node_id: info.node_id.clone(),
            connection,
        });
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(actor.id().to_string(), route.clone());
        }
        Ok(route)
    }

    fn live_route(&self, actor_id: &str) -> Option<Arc<Route>> {
        self.cached_route(actor_id)
            .filter(|route| !route.connection.is_closed())
    }

    /// The actor was killed (or restarted) through this client: its worker may take a moment to
    /// go, but no further call from here may reach it; the next one asks the head for a later
    /// incarnation (or learns the actor is dead).
    pub(crate) fn forget_killed(&self, actor_id: &str) {
        let route = self.cached_route(actor_id);
        if let Some(route) = route {
            self.forget_route(actor_id, route.incarnation);
            self.mark_dying(actor_id, route.incarnation);
        }
    }

    fn mark_dying(&self, actor_id: &str, incarnation: u64) {
        if let Ok(mut dying) = self.dying.lock() {
            dying.insert(actor_id.to_string(), incarnation);
        }
    }

    fn dying_incarnation(&self, actor_id: &str) -> Option<u64> {
        self.dying.lock().ok()?.get(actor_id).copied()
    }

    fn clear_dying(&self, actor_id: &str, alive_incarnation: u64) {
        if let Ok(mut dying) = self.dying.lock() {
            if dying
                .get(actor_id)
                .is_some_and(|dead| *dead != alive_incarnation)
            {
                dying.remove(actor_id);
            }
        }
    }

    fn cached_route(&self, actor_id: &str) -> Option<Arc<Route>> {
        self.routes.lock().ok()?.get(actor_id).cloned()
    }

    fn forget_route(&self, actor_id: &str, incarnation: u64) {
        if let Ok(mut routes) = self.routes.lock() {
            if routes
                .get(actor_id)
                .is_some_and(|route| route.incarnation == incarnation)
            {
                routes.remove(actor_id);
            }
        }
    }

    async fn connection(&self, address: &str) -> Result<Arc<Connection>, LinkError> {
        // One slot per address: opening a stream to a slow worker never delays other workers.
        let slot = {
            let mut connections = self
                .connections
                .lock()
                .map_err(|_| LinkError("connection table poisoned".to_string()))?;
            connections.entry(address.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(existing) = slot.as_ref() {
            if !existing.is_closed() {
                return Ok(existing.clone());
            }
        }
        let connection = Connection::open(address, &self.token, &self.session_id).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// After a stream broke: asks the head whether the actor is being restarted.
    /// After a stream broke: asks the head (waiting for it to notice) whether that incarnation
    /// is gone and whether a restart is coming. Only an incarnation the head confirms gone is
    /// marked dying, so a mere network blip never blocks later calls.
    async fn death_notice(
        &self,
        actor: &ActorRef,
        incarnation: u64,
        link_reason: String,
    ) -> (bool, String) {
        let mut actors = self.actors.clone();
        let request = GetActorRequest {
            id: actor.id().to_string(),
            wait_past_incarnation: true,
            incarnation,
            timeout_ms: DEATH_NOTICE_WAIT.as_millis() as u64,
            ..GetActorRequest::default()
        };
        let answer = tokio::time::timeout(
            DEATH_NOTICE_WAIT + Duration::from_secs(2),
            actors.get_actor(request),
        )
        .await;
        let info = match answer {
            Ok(Ok(info)) => info.into_inner(),
            Ok(Err(status)) => {
                let detail = format!("the head could not say more: {}", status.message());
                return (false, format!("{link_reason} ({detail})"));
            }
            Err(_) => return (false, format!("{link_reason} (the head did not answer)")),
        };
        let state = info.state();
        let moved_on = info.incarnation != incarnation;
        if state == ActorState::Alive && !moved_on {
            return (
                false,
                format!("{link_reason} (the head still lists this worker as alive)"),
            );
        }
        self.mark_dying(actor.id(), incarnation);
        let restarting = moved_on
            || matches!(
                state,
                ActorState::Restarting | ActorState::Pending | ActorState::Starting
            );
        let reason = if info.death_reason.is_empty() {
            link_reason
        } else {
            info.death_reason
        };
        (restarting && state != ActorState::Dead, reason)
    }
}

fn not_ready(actor: &ActorRef, started: Instant, detail: String) -> Error {
    Error::NotReady {
        actor: actor.id().to_string(),
        type_name: actor.type_name().to_string(),
        waited_ms: started.elapsed().as_millis() as u64,
        detail,
    }
}

fn failure_error(actor: &ActorRef, node: &str, method_name: &str, failure: CallFailure) -> Error {
    let method = if failure.method.is_empty() {
        method_name.to_string()
    } else {
        failure.method.clone()
    };
    match failure.kind() {
        FailureKind::Panic => Error::Panicked(Box::new(RemotePanic {
            actor: actor.id().to_string(),
            type_name: actor.type_name().to_string(),
            node: node.to_string(),
            method,
            message: failure.message,
            backtrace: failure.backtrace,
        })),
        FailureKind::Application => Error::Method {
            actor: actor.id().to_string(),
            type_name: actor.type_name().to_string(),
            node: node.to_string(),
            method,
            message: failure.message,
        },
        _ => Error::Rejected {
            actor: actor.id().to_string(),
            type_name: actor.type_name().to_string(),
            node: node.to_string(),
            method,
            message: failure.message,
        },
    }
}
