//! Reading actors' output logs through the head (`Actors.ReadActorLog`, the dashboard): find
//! the actor by id or name, pick the incarnation, and read its log from the node agent that ran
//! it. A node that died or left, or that does not answer in time, is a clear error naming it.

use super::Head;
use crate::rpc::{check_id, check_text, invalid};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;
use troupe_proto::{
    ActorLogChunk, ActorState, Incarnation, ReadActorLogRequest, ReadWorkerLogRequest,
};

/// How long a node agent has to answer a log read.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Where one incarnation's log is, as the head knows it.
struct Located {
    actor_id: String,
    actor_name: String,
    incarnation: Incarnation,
    running: bool,
    incarnations: Vec<Incarnation>,
    actor_state: i32,
    /// Why the node cannot be asked (dead, or gone from the cluster).
    node_problem: Option<String>,
}

impl Head {
    /// Reads a range of an actor's log from the node that ran the incarnation asked for.
    pub(crate) async fn read_actor_log(
        self: &Arc<Self>,
        request: ReadActorLogRequest,
    ) -> Result<ActorLogChunk, Status> {
        match (request.id.is_empty(), request.name.is_empty()) {
            (false, true) => check_id("id", &request.id)?,
            (true, false) => check_text("name", &request.name, 256)?,
            _ => return Err(invalid("id/name", "give exactly one of id and name")),
        }
        let located = self.read(|state| locate(state, &request))?;
        if request.list_only {
            return Ok(ActorLogChunk {
                actor_id: located.actor_id,
                actor_name: located.actor_name,
                incarnation: located.incarnation.incarnation,
                node_id: located.incarnation.node_id,
                chunk: None,
                running: located.running,
                incarnations: located.incarnations,
                actor_state: located.actor_state,
            });
        }
        if let Some(problem) = located.node_problem {
            return Err(Status::unavailable(problem));
        }
        let address = located.incarnation.node_address.clone();
        let mut agent = self.agent(&address).map_err(Status::unavailable)?;
        let read = agent.read_worker_log(ReadWorkerLogRequest {
            actor_id: located.actor_id.clone(),
            incarnation: located.incarnation.incarnation,
            offset: request.offset,
            from_end: request.from_end,
            max_bytes: request.max_bytes,
        });
        let chunk = match tokio::time::timeout(READ_DEADLINE, read).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                return Err(Status::not_found(status.message().to_string()))
            }
            Ok(Err(status)) => {
                return Err(Status::unavailable(format!(
                    "node {} at {address} could not read the log of incarnation {}: {}",
                    located.incarnation.node_id,
                    located.incarnation.incarnation,
                    status.message()
                )))
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {} at {address} did not answer within {} s",
                    located.incarnation.node_id,
                    READ_DEADLINE.as_secs()
                )))
            }
        };
        Ok(ActorLogChunk {
            actor_id: located.actor_id,
            actor_name: located.actor_name,
            incarnation: located.incarnation.incarnation,
            node_id: located.incarnation.node_id,
            chunk: Some(chunk),
            running: located.running,
            incarnations: located.incarnations,
            actor_state: located.actor_state,
        })
    }
}

fn locate(
    state: &super::state::HeadState,
    request: &ReadActorLogRequest,
) -> Result<Located, Status> {
    let actor = if !request.id.is_empty() {
        state.actors.get(&request.id).ok_or_else(|| {
            Status::not_found(format!(
                "no actor with id {} (it never existed, or it died long enough ago to be pruned)",
                request.id
            ))
        })?
    } else {
        // The live actor of that name, else the one of that name created last.
        let live = state
            .names
            .get(&request.name)
            .and_then(|id| state.actors.get(id));
        let latest_dead = || {
            state
                .actors
                .values()
                .filter(|actor| actor.info.name == request.name)
                .max_by_key(|actor| actor.seq)
        };
        live.or_else(latest_dead).ok_or_else(|| {
            Status::not_found(format!(
                "no actor named `{}`, live or dead (names are case-sensitive; `troupe status` \
                 lists the actors)",
                request.name
            ))
        })?
    };
    let history = &actor.info.history;
    let incarnation = if request.incarnation == 0 && request.list_only {
        history.last().cloned().unwrap_or_default()
    } else if request.incarnation == 0 {
        history.last().cloned().ok_or_else(|| {
            Status::failed_precondition(format!(
                "actor {} has not started on any node yet ({}): it has no log",
                actor.info.id,
                actor.info.state().as_str_name()
            ))
        })?
    } else {
        history
            .iter()
            .find(|i| i.incarnation == request.incarnation)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<String> =
                    history.iter().map(|i| i.incarnation.to_string()).collect();
                Status::not_found(format!(
                    "actor {} has no incarnation {} the head still knows (known: {})",
                    actor.info.id,
                    request.incarnation,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?
    };
    let node_problem = match state.nodes.get(&incarnation.node_id) {
        None => Some(format!(
            "incarnation {} of actor {} ran on node {}, which has left the cluster: its log went \
             with it",
            incarnation.incarnation, actor.info.id, incarnation.node_id
        )),
        Some(node) if !node.alive => Some(format!(
            "incarnation {} of actor {} ran on node {} ({}), which is dead: its log cannot be \
             read until that node agent is back",
            incarnation.incarnation, actor.info.id, node.id, node.hostname
        )),
        Some(_) => None,
    };
    let running = incarnation.ended_unix_ms == 0
        && actor.info.incarnation == incarnation.incarnation
        && matches!(actor.info.state(), ActorState::Starting | ActorState::Alive);
    Ok(Located {
        actor_id: actor.info.id.clone(),
        actor_name: actor.info.name.clone(),
        incarnation,
        running,
        incarnations: history.clone(),
        actor_state: actor.info.state,
        node_problem,
    })
}
