//! What a live actor is doing now (`troupe calls`, `Cluster::calls`): its calls in flight with
//! method, caller, step and elapsed time, its queue, and each thread's native stack, asked of
//! its worker directly.

use super::query::looks_like_id;
use crate::rpc::{AuthChannel, Token};
use std::time::Duration;
use tonic::Status;
use troupe_proto::actors_client::ActorsClient;
use troupe_proto::worker_client::WorkerClient;
use troupe_proto::{ActorInfo, ActorState, GetActorRequest, InspectReply, InspectRequest};

/// How long the worker has to answer (a stack capture takes up to 5 s).
const INSPECT_DEADLINE: Duration = Duration::from_secs(15);

/// An actor and what its worker said it is doing.
#[derive(Debug, Clone)]
pub struct ActorActivity {
    pub actor: ActorInfo,
    pub activity: InspectReply,
}

/// Finds the live actor `actor` (an id or a name) and asks its worker what it is doing.
pub async fn inspect(
    actors: &mut ActorsClient<AuthChannel>,
    token: &Token,
    actor: &str,
    backtraces: bool,
) -> Result<ActorActivity, Status> {
    let info = find_live(actors, actor).await?;
    match info.state() {
        ActorState::Alive => {}
        ActorState::Dead => {
            return Err(Status::failed_precondition(format!(
                "actor {} is dead ({}): nothing runs; `troupe logs {}` shows its output",
                info.id, info.death_reason, info.id
            )))
        }
        other => {
            return Err(Status::failed_precondition(format!(
                "actor {} is {} (not serving calls yet){}",
                info.id,
                other.as_str_name(),
                if info.pending_reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", info.pending_reason)
                }
            )))
        }
    }
    let address = info.worker_address.clone();
    let asked = async {
        let channel = crate::rpc::connect(&address, token).await.map_err(|why| {
            Status::unavailable(format!("cannot reach the worker at {address}: {why}"))
        })?;
        WorkerClient::new(channel)
            .inspect(InspectRequest { backtraces })
            .await
            .map(|reply| reply.into_inner())
    };
    let activity = tokio::time::timeout(INSPECT_DEADLINE, asked)
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the worker of actor {} at {address} did not answer within {} s (its process \
                 may be stopped or its runtime blocked; its node's `troupe logs` may say more)",
                info.id,
                INSPECT_DEADLINE.as_secs()
            ))
        })??;
    Ok(ActorActivity {
        actor: info,
        activity,
    })
}

/// The actor by id (when `actor` has an id's shape and one matches) or by live name.
async fn find_live(
    actors: &mut ActorsClient<AuthChannel>,
    actor: &str,
) -> Result<ActorInfo, Status> {
    let get = |request: GetActorRequest| {
        let mut actors = actors.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), actors.get_actor(request))
                .await
                .map_err(|_| Status::deadline_exceeded("the head did not answer within 10 s"))?
                .map(|reply| reply.into_inner())
        }
    };
    if looks_like_id(actor) {
        match get(GetActorRequest {
            id: actor.to_string(),
            ..GetActorRequest::default()
        })
        .await
        {
            Err(status) if status.code() == tonic::Code::NotFound => {}
            found => return found,
        }
    }
    get(GetActorRequest {
        name: actor.to_string(),
        ..GetActorRequest::default()
    })
    .await
}
