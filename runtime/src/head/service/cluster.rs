//! The `Cluster` service: what a driver asks of the cluster as a whole. Version, status, the
//! driver session (its actors stop when it closes), executables, placement groups, the
//! rendezvous key-value store, and the pipeline reports the dashboard shows.

use super::validate::check_request;
use super::{HeadService, MAX_WAIT};
use crate::head::Order;
use crate::rpc::{check_id, check_text, invalid};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use troupe_proto::cluster_server::Cluster;
use troupe_proto::{
    BinaryChunk, BinaryRef, ClusterStatusReply, CreatePlacementGroupRequest, Empty, HasBinaryReply,
    KvGetReply, KvGetRequest, KvPutRequest, PipelineReport, PlacementGroupInfo, PlacementGroupRef,
    SessionEvent, SessionPing, VersionReply,
};

/// Limits of the rendezvous store.
const MAX_KV_VALUE: usize = 1 << 20;
const MAX_KV_KEYS: usize = 100_000;

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
        let mut reply = self.0.inspect(crate::head::metrics::status_of);
        reply.autoscaler = self.0.autoscaler.as_ref().map(|a| a.status());
        Ok(Response::new(reply))
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
        self.0.writable()?;
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
        self.0.durable().await?;
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
        self.0.durable().await?;
        Ok(Response::new(Empty {}))
    }

    async fn kv_put(&self, request: Request<KvPutRequest>) -> Result<Response<Empty>, Status> {
        self.0.writable()?;
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
        self.0.durable().await?;
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

    async fn report_pipeline(
        &self,
        request: Request<PipelineReport>,
    ) -> Result<Response<Empty>, Status> {
        let report = request.into_inner();
        super::validate::check_pipeline_report(&report)?;
        self.0.pipelines.report(report, Instant::now());
        Ok(Response::new(Empty {}))
    }

    async fn driver_timeline(
        &self,
        request: Request<troupe_proto::TimelineRequest>,
    ) -> Result<Response<troupe_proto::TimelineReply>, Status> {
        let request = request.into_inner();
        let spans = self
            .0
            .pipelines
            .spans_between(request.since_unix_us, request.until_unix_us);
        Ok(Response::new(troupe_proto::TimelineReply {
            spans,
            dropped: 0,
        }))
    }

    async fn upload_binary(
        &self,
        request: Request<Streaming<BinaryChunk>>,
    ) -> Result<Response<BinaryRef>, Status> {
        let hash = self.0.binaries.receive(request.into_inner()).await?;
        Ok(Response::new(BinaryRef { hash }))
    }
}
