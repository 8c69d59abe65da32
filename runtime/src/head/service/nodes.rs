//! The `Nodes` service: what node agents call. Registration and heartbeats (with the jobs each
//! node runs), worker exits, job logs and exits, and the executables and packages they fetch.

use super::validate::check_resources;
use super::HeadService;
use crate::rpc::{check_id, check_text, invalid};
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use troupe_proto::nodes_server::Nodes;
use troupe_proto::{
    BinaryChunk, BinaryRef, Empty, HeartbeatReply, HeartbeatRequest, JobExitedRequest, JobLogAck,
    JobLogAppend, RegisterNodeReply, RegisterNodeRequest, WorkerExitedRequest,
};

#[tonic::async_trait]
impl Nodes for HeadService {
    async fn register_node(
        &self,
        request: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeReply>, Status> {
        self.0.writable()?;
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
        self.0.durable().await?;
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
