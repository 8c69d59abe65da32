//! The `Actors` service: an actor's lifecycle as drivers and workers see it. Create, look up (by
//! id or name, optionally waiting until ready or past an incarnation), kill, list, the spec a
//! starting worker fetches, a worker's readiness report, and call counts.

use super::validate::check_create;
use super::{HeadService, MAX_WAIT};
use crate::head::Order;
use crate::rpc::{check_id, check_text, invalid};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};
use troupe_proto::actors_server::Actors;
use troupe_proto::{
    ActorInfo, ActorSpec, ActorState, CallStats, CreateActorRequest, Empty, GetActorRequest,
    GetActorSpecRequest, KillActorRequest, ListActorsReply, ReadActorLogRequest,
    WorkerReadyRequest,
};

#[tonic::async_trait]
impl Actors for HeadService {
    async fn create_actor(
        &self,
        request: Request<CreateActorRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        self.0.writable()?;
        let request = request.into_inner();
        check_create(&request)?;
        if !request.binary_hash.starts_with("local-") && !self.0.binaries.has(&request.binary_hash)
        {
            return Err(invalid(
                "binary_hash",
                format!(
                    "no executable with hash {} was uploaded",
                    request.binary_hash
                ),
            ));
        }
        let info = self
            .0
            .update(|state| match state.create_actor(request, Instant::now()) {
                Ok((info, orders)) => (Ok(info), orders),
                Err(status) => (Err(status), Vec::new()),
            })?;
        self.0.durable().await?;
        Ok(Response::new(info))
    }

    async fn get_actor(
        &self,
        request: Request<GetActorRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
        let request = request.into_inner();
        match (request.id.is_empty(), request.name.is_empty()) {
            (false, true) => check_id("id", &request.id)?,
            (true, false) => check_text("name", &request.name, 256)?,
            _ => return Err(invalid("id/name", "give exactly one of id and name")),
        }
        self.0.inspect(|state| state.counters.lookups_total += 1);
        let deadline = Instant::now() + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
        let mut changes = self.0.changed.subscribe();
        loop {
            let info = self.0.read(|state| {
                state
                    .find_actor(&request.id, &request.name)
                    .map(|actor| actor.info.clone())
            })?;
            let state = info.state();
            let past = info.incarnation != request.incarnation;
            let settled = if request.wait_ready && request.wait_past_incarnation {
                state == ActorState::Dead || (state == ActorState::Alive && past)
            } else if request.wait_ready {
                matches!(state, ActorState::Alive | ActorState::Dead)
            } else if request.wait_past_incarnation {
                state != ActorState::Alive || past
            } else {
                true
            };
            let now = Instant::now();
            if settled || now >= deadline {
                return Ok(Response::new(info));
            }
            if tokio::time::timeout(deadline - now, changes.changed())
                .await
                .is_err()
            {
                continue;
            }
        }
    }

    async fn kill_actor(
        &self,
        request: Request<KillActorRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_id("id", &request.id)?;
        self.0.update(|state| {
            match state.kill_actor(&request.id, request.allow_restart, "killed by request") {
                Ok(orders) => (Ok(()), orders),
                Err(status) => (Err(status), Vec::new()),
            }
        })?;
        self.0.durable().await?;
        Ok(Response::new(Empty {}))
    }

    async fn list_actors(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<ListActorsReply>, Status> {
        let mut actors: Vec<ActorInfo> = self.0.read(|state| {
            state
                .actors
                .values()
                .map(|actor| actor.info.clone())
                .collect()
        });
        actors.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(ListActorsReply { actors }))
    }

    async fn get_actor_spec(
        &self,
        request: Request<GetActorSpecRequest>,
    ) -> Result<Response<ActorSpec>, Status> {
        let request = request.into_inner();
        check_id("actor_id", &request.actor_id)?;
        let spec = self
            .0
            .read(|state| state.actor_spec(&request.actor_id, request.incarnation))?;
        Ok(Response::new(spec))
    }

    async fn worker_ready(
        &self,
        request: Request<WorkerReadyRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_id("actor_id", &request.actor_id)?;
        if request.constructor_error.is_empty() {
            crate::rpc::normalize_address(&request.worker_address)
                .map_err(|why| invalid("worker_address", why))?;
        }
        let constructor_error: String = request.constructor_error.chars().take(16 * 1024).collect();
        self.0.update(|state| {
            match state.worker_ready(
                &request.actor_id,
                request.incarnation,
                &request.worker_address,
                request.pid,
                &constructor_error,
            ) {
                Ok(orders) => (Ok(()), orders),
                Err(status) => (Err(status), Vec::new()),
            }
        })?;
        self.0.durable().await?;
        Ok(Response::new(Empty {}))
    }

    async fn report_calls(&self, request: Request<CallStats>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_id("actor_id", &request.actor_id)?;
        self.0.update(|state| {
            state.counters.calls_total = state
                .counters
                .calls_total
                .saturating_add(request.calls_delta);
            ((), Vec::<Order>::new())
        });
        Ok(Response::new(Empty {}))
    }

    async fn read_actor_log(
        &self,
        request: Request<ReadActorLogRequest>,
    ) -> Result<Response<troupe_proto::ActorLogChunk>, Status> {
        let chunk = self.0.read_actor_log(request.into_inner()).await?;
        Ok(Response::new(chunk))
    }
}
