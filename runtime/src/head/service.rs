//! The head's gRPC services. Each handler validates its request (naming the bad field), then
//! changes or reads the head's state; none may panic on input.

use super::{Head, Order};
use crate::rpc::{check_id, check_text, invalid};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use troupe_proto::actors_server::{Actors, ActorsServer};
use troupe_proto::cluster_server::{Cluster, ClusterServer};
use troupe_proto::jobs_server::JobsServer;
use troupe_proto::nodes_server::{Nodes, NodesServer};
use troupe_proto::*;

/// Longest a GetActor or KvGet wait may last.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Limits of the rendezvous store.
const MAX_KV_VALUE: usize = 1 << 20;
const MAX_KV_KEYS: usize = 100_000;

pub(super) async fn serve(head: Arc<Head>, listener: tokio::net::TcpListener) {
    let incoming = crate::rpc::incoming(listener);
    let require_token = crate::rpc::auth::RequireToken::new(&head.token, "head");
    let service = HeadService(head);
    let limit = crate::rpc::MAX_MESSAGE_BYTES;
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(require_token)
        .add_service(
            NodesServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            ActorsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            JobsServer::new(super::jobs::JobsService(service.0.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming(incoming)
        .await;
    if let Err(err) = result {
        tracing::error!(%err, "head server stopped");
    }
}

#[derive(Clone)]
struct HeadService(Arc<Head>);

fn check_resources(resources: &NodeResources) -> Result<(), Status> {
    if resources.gpus.len() > 1024 {
        return Err(invalid("resources.gpus", "more than 1024 devices"));
    }
    let mut seen = std::collections::HashSet::new();
    for gpu in &resources.gpus {
        if !seen.insert(gpu.index) {
            return Err(invalid(
                "resources.gpus",
                format!("device {} listed twice", gpu.index),
            ));
        }
        check_text("resources.gpus.model", &gpu.model, 128)?;
    }
    check_custom("resources.custom", &resources.custom)?;
    for (key, value) in &resources.labels {
        check_id("resources.labels key", key)?;
        check_text("resources.labels value", value, 256)?;
    }
    Ok(())
}

fn check_custom(
    field: &str,
    custom: &std::collections::HashMap<String, f64>,
) -> Result<(), Status> {
    for (name, quantity) in custom {
        check_id(&format!("{field} name"), name)?;
        if !quantity.is_finite() || *quantity < 0.0 {
            return Err(invalid(
                field,
                format!("{name}={quantity} is not a quantity"),
            ));
        }
    }
    Ok(())
}

fn check_create(request: &CreateActorRequest) -> Result<(), Status> {
    check_id("type_name", &request.type_name)?;
    check_text("name", &request.name, 256)?;
    if request.max_restarts < -1 {
        return Err(invalid(
            "max_restarts",
            format!("{} (use -1 for no limit)", request.max_restarts),
        ));
    }
    if request.max_concurrency == 0 || request.max_concurrency > 100_000 {
        return Err(invalid(
            "max_concurrency",
            format!("{} is not in 1..=100000", request.max_concurrency),
        ));
    }
    check_id("binary_hash", &request.binary_hash)?;
    if !request.gang.is_empty() {
        check_id("gang", &request.gang)?;
        if request.gang_size == 0 || request.gang_size > 10_000 {
            return Err(invalid(
                "gang_size",
                format!("{} is not in 1..=10000", request.gang_size),
            ));
        }
    }
    if !request.placement_group_id.is_empty() {
        check_id("placement_group_id", &request.placement_group_id)?;
        if !request.gang.is_empty() {
            return Err(invalid(
                "placement_group_id",
                "an actor runs in a gang or in a placement group, not both".to_string(),
            ));
        }
    } else if request.bundle_index.is_some() {
        return Err(invalid(
            "bundle_index",
            "given without a placement_group_id".to_string(),
        ));
    }
    for arg in &request.worker_args {
        check_text("worker_args", arg, 4096)?;
    }
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid("env", format!("`{key}` is not a variable name")));
        }
        if value.contains('\0') {
            return Err(invalid(
                "env",
                format!("the value of {key} contains a NUL byte"),
            ));
        }
    }
    let resources = request
        .resources
        .as_ref()
        .ok_or_else(|| invalid("resources", "missing"))?;
    check_request("resources", resources)
}

/// Checks one resource request (an actor's, or a placement-group bundle's, named `what`).
fn check_request(what: &str, resources: &ResourceRequest) -> Result<(), Status> {
    if resources.gpu_milli > 1000 && !resources.gpu_milli.is_multiple_of(1000) {
        return Err(invalid(
            &format!("{what}.gpu_milli"),
            format!("{}: above one GPU, GPUs must be whole", resources.gpu_milli),
        ));
    }
    check_custom(&format!("{what}.custom"), &resources.custom)?;
    for (key, value) in &resources.label_selector {
        check_id(&format!("{what}.label_selector key"), key)?;
        check_text(&format!("{what}.label_selector value"), value, 256)?;
    }
    for model in &resources.gpu_models {
        check_text(&format!("{what}.gpu_models"), model, 256)?;
    }
    if !resources.node_id.is_empty() {
        check_id(&format!("{what}.node_id"), &resources.node_id)?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Nodes for HeadService {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeReply>, Status> {
        let request = request.into_inner();
        crate::rpc::normalize_address(&request.address).map_err(|why| invalid("address", why))?;
        check_text("hostname", &request.hostname, 256)?;
        if !request.node_id.is_empty() {
            check_id("node_id", &request.node_id)?;
        }
        let resources = request
            .resources
            .ok_or_else(|| invalid("resources", "missing"))?;
        check_resources(&resources)?;
        let node_id = self.0.update(|state| {
            state.register_node(
                &request.node_id,
                &request.address,
                &request.hostname,
                resources,
                &request.running_jobs,
                Instant::now(),
            )
        });
        tracing::info!(node = node_id, address = request.address, "node registered");
        Ok(Response::new(RegisterNodeReply {
            node_id,
            heartbeat_interval_ms: self.0.config.heartbeat_interval.as_millis() as u64,
            node_timeout_ms: self.0.config.node_timeout.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let request = request.into_inner();
        check_id("node_id", &request.node_id)?;
        let reregister = self.0.update(|state| {
            let now = Instant::now();
            let (reregister, mut orders) = state.heartbeat(&request.node_id, &request.running, now);
            if !reregister {
                orders.extend(state.reconcile_jobs(&request.node_id, &request.jobs, now));
            }
            (reregister, orders)
        });
        Ok(Response::new(HeartbeatReply { reregister }))
    }

    async fn worker_exited(
        &self,
        request: Request<WorkerExitedRequest>,
    ) -> Result<Response<Empty>, Status> {
        let mut report = request.into_inner();
        check_id("node_id", &report.node_id)?;
        check_id("actor_id", &report.actor_id)?;
        let known = self
            .0
            .read(|state| state.actors.contains_key(&report.actor_id));
        if !known {
            return Err(Status::not_found(format!(
                "no actor with id {}",
                report.actor_id
            )));
        }
        if report.log_tail.len() > 16 * 1024 {
            let cut = report.log_tail.len() - 16 * 1024;
            let boundary = (cut..report.log_tail.len())
                .find(|i| report.log_tail.is_char_boundary(*i))
                .unwrap_or(report.log_tail.len());
            report.log_tail = report.log_tail[boundary..].to_string();
        }
        self.0.worker_exited(report);
        Ok(Response::new(Empty {}))
    }

    async fn append_job_log(
        &self,
        request: Request<JobLogAppend>,
    ) -> Result<Response<JobLogAck>, Status> {
        Ok(Response::new(self.0.append_job_log(request.into_inner())?))
    }

    async fn job_exited(
        &self,
        request: Request<JobExitedRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.0.job_exited(request.into_inner())?;
        Ok(Response::new(Empty {}))
    }

    type FetchPackageStream = ReceiverStream<Result<BinaryChunk, Status>>;

    async fn fetch_package(
        &self,
        request: Request<BinaryRef>,
    ) -> Result<Response<Self::FetchPackageStream>, Status> {
        let hash = request.into_inner().hash;
        Ok(Response::new(self.0.packages.stream(&hash).await?))
    }

    type FetchBinaryStream = ReceiverStream<Result<BinaryChunk, Status>>;

    async fn fetch_binary(
        &self,
        request: Request<BinaryRef>,
    ) -> Result<Response<Self::FetchBinaryStream>, Status> {
        let hash = request.into_inner().hash;
        let chunks = self.0.binaries.stream(&hash).await?;
        Ok(Response::new(chunks))
    }
}

#[tonic::async_trait]
impl Actors for HeadService {
    async fn create_actor(
        &self,
        request: Request<CreateActorRequest>,
    ) -> Result<Response<ActorInfo>, Status> {
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
}

#[tonic::async_trait]
impl Cluster for HeadService {
    async fn version(&self, _request: Request<Empty>) -> Result<Response<VersionReply>, Status> {
        Ok(Response::new(VersionReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: "troupe.v1".to_string(),
        }))
    }

    async fn status(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        Ok(Response::new(self.0.inspect(super::metrics::status_of)))
    }

    type SessionStream = ReceiverStream<Result<SessionEvent, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<SessionPing>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut pings = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), pings.message())
            .await
            .map_err(|_| Status::deadline_exceeded("the session sent no id within 10 s"))??
            .ok_or_else(|| {
                invalid(
                    "session_id",
                    "the session stream closed before naming itself",
                )
            })?;
        check_id("session_id", &first.session_id)?;
        let session_id = first.session_id;
        let (events, outgoing) = mpsc::channel(4);
        let head = self.0.clone();
        head.update(|state| {
            state.open_session(&session_id);
            ((), Vec::new())
        });
        tracing::debug!(session = session_id, "driver session opened");
        tokio::spawn(async move {
            // Ends when the driver drops the stream, exits, or is killed (the socket closes).
            while let Ok(Some(_)) = pings.message().await {}
            tracing::info!(
                session = session_id,
                "driver session closed: stopping its actors"
            );
            head.update(|state| ((), state.session_closed(&session_id)));
            drop(events);
        });
        Ok(Response::new(ReceiverStream::new(outgoing)))
    }

    async fn has_binary(
        &self,
        request: Request<BinaryRef>,
    ) -> Result<Response<HasBinaryReply>, Status> {
        let hash = request.into_inner().hash;
        Ok(Response::new(self.0.binaries.answer_has(&hash)?))
    }

    async fn create_placement_group(
        &self,
        request: Request<CreatePlacementGroupRequest>,
    ) -> Result<Response<PlacementGroupInfo>, Status> {
        let request = request.into_inner();
        check_text("name", &request.name, 256)?;
        for (index, bundle) in request.bundles.iter().enumerate() {
            check_request(&format!("bundles[{index}]"), bundle)?;
        }
        let info = self
            .0
            .update(|state| match state.create_group(request, Instant::now()) {
                Ok((info, orders)) => (Ok(info), orders),
                Err(status) => (Err(status), Vec::new()),
            })?;
        Ok(Response::new(info))
    }

    async fn get_placement_group(
        &self,
        request: Request<PlacementGroupRef>,
    ) -> Result<Response<PlacementGroupInfo>, Status> {
        let request = request.into_inner();
        check_id("id", &request.id)?;
        Ok(Response::new(
            self.0.read(|state| state.group_info(&request.id))?,
        ))
    }

    async fn remove_placement_group(
        &self,
        request: Request<PlacementGroupRef>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_id("id", &request.id)?;
        self.0.update(
            |state| match state.remove_group(&request.id, Instant::now()) {
                Ok(orders) => (Ok(()), orders),
                Err(status) => (Err(status), Vec::new()),
            },
        )?;
        Ok(Response::new(Empty {}))
    }

    async fn kv_put(&self, request: Request<KvPutRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_text("key", &request.key, 256)?;
        if request.key.is_empty() {
            return Err(invalid("key", "is empty"));
        }
        if request.value.len() > MAX_KV_VALUE {
            return Err(invalid(
                "value",
                format!("{} bytes; at most {MAX_KV_VALUE}", request.value.len()),
            ));
        }
        self.0.update(|state| {
            let outcome = if !request.overwrite && state.kv.contains_key(&request.key) {
                Err(Status::already_exists(format!(
                    "key `{}` is already set",
                    request.key
                )))
            } else if state.kv.len() >= MAX_KV_KEYS && !state.kv.contains_key(&request.key) {
                Err(Status::resource_exhausted(format!(
                    "the store holds {MAX_KV_KEYS} keys already"
                )))
            } else {
                state.kv.insert(request.key.clone(), request.value.clone());
                Ok(())
            };
            (outcome, Vec::<Order>::new())
        })?;
        Ok(Response::new(Empty {}))
    }

    async fn kv_get(&self, request: Request<KvGetRequest>) -> Result<Response<KvGetReply>, Status> {
        let request = request.into_inner();
        check_text("key", &request.key, 256)?;
        let deadline = Instant::now() + Duration::from_millis(request.timeout_ms).min(MAX_WAIT);
        let mut changes = self.0.changed.subscribe();
        loop {
            let found = self.0.read(|state| state.kv.get(&request.key).cloned());
            let now = Instant::now();
            if found.is_some() || !request.wait || now >= deadline {
                return Ok(Response::new(KvGetReply {
                    found: found.is_some(),
                    value: found.unwrap_or_default(),
                }));
            }
            let _ = tokio::time::timeout(deadline - now, changes.changed()).await;
        }
    }

    async fn upload_binary(
        &self,
        request: Request<Streaming<BinaryChunk>>,
    ) -> Result<Response<BinaryRef>, Status> {
        let hash = self.0.binaries.receive(request.into_inner()).await?;
        Ok(Response::new(BinaryRef { hash }))
    }
}
