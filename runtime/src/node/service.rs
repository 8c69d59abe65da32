//! The node agent's gRPC service: start and stop worker processes on the head's orders.

use super::workers::Launch;
use super::NodeAgent;
use crate::rpc::{check_file_id, check_id, check_submission_id, invalid};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use troupe_proto::node_agent_server::{NodeAgent as NodeAgentService, NodeAgentServer};
use troupe_proto::{
    Empty, LogChunk, ReadWorkerLogRequest, StartJobReply, StartJobRequest, StartWorkerReply,
    StartWorkerRequest, StopJobOrder, StopWorkerRequest, WorkerExitedRequest,
};

/// Environment variables a worker reads at start.
pub(crate) mod env {
    pub const ACTOR_ID: &str = "TROUPE_WORKER_ACTOR_ID";
    pub const INCARNATION: &str = "TROUPE_WORKER_INCARNATION";
    pub const HEAD_ADDRESS: &str = "TROUPE_HEAD_ADDRESS";
    pub const NODE_ID: &str = "TROUPE_NODE_ID";
    pub const BIND_HOST: &str = "TROUPE_BIND_HOST";
    pub const SESSION: &str = "TROUPE_SESSION";
    pub const BINARY_HASH: &str = "TROUPE_BINARY_HASH";
    pub const NUM_CPUS: &str = "TROUPE_NUM_CPUS";
    pub const TOKEN: &str = crate::rpc::auth::TOKEN_ENV;
    /// Thread-pool sizes set to the actor's CPU count.
    pub const THREAD_POOLS: [&str; 6] = [
        "TOKIO_WORKER_THREADS",
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TROUPE_NUM_THREADS",
    ];
}

pub(super) async fn serve(agent: Arc<NodeAgent>, listener: tokio::net::TcpListener) {
    let incoming = crate::rpc::incoming(listener);
    let require_token = crate::rpc::auth::RequireToken::new(&agent.config.token, "node agent");
    let result = tonic::transport::Server::builder()
        .layer(require_token)
        .add_service(NodeAgentServer::new(AgentService(agent)))
        .serve_with_incoming(incoming)
        .await;
    if let Err(err) = result {
        tracing::error!(%err, "node agent server stopped");
    }
}

struct AgentService(Arc<NodeAgent>);

/// Resolves the executable, starts the worker, waits for it to exit, and reports the exit (or
/// the failure to start) to the head.
async fn start_and_watch(agent: Arc<NodeAgent>, request: StartWorkerRequest) {
    let actor_id = request.actor_id.clone();
    let incarnation = request.incarnation;
    let exit = match launch(&agent, request).await {
        Ok(exit) => match exit.await {
            Ok(exit) => exit,
            Err(_) => return,
        },
        Err(why) => {
            tracing::warn!(actor = actor_id, %why, "could not start a worker");
            report_exit(
                &agent,
                WorkerExitedRequest {
                    node_id: agent.node_id(),
                    actor_id,
                    incarnation,
                    start_error: why,
                    ..WorkerExitedRequest::default()
                },
            )
            .await;
            return;
        }
    };
    tracing::info!(
        actor = exit.actor_id,
        code = exit.exit_code,
        signal = exit.signal,
        "worker exited"
    );
    let report = WorkerExitedRequest {
        node_id: agent.node_id(),
        actor_id: exit.actor_id,
        incarnation: exit.incarnation,
        exit_code: exit.exit_code,
        signal: exit.signal,
        log_tail: exit.log_tail,
        start_error: String::new(),
    };
    report_exit(&agent, report).await;
}

async fn launch(
    agent: &Arc<NodeAgent>,
    request: StartWorkerRequest,
) -> Result<tokio::sync::oneshot::Receiver<super::workers::Exit>, String> {
    let executable = agent
        .executables
        .resolve(&request.binary_hash)
        .await
        .map_err(|why| format!("executable {}: {why}", request.binary_hash))?;
    let threads = request.cpu_milli.div_ceil(1000).max(1).to_string();
    let mut vars: Vec<(String, String)> = request.env.into_iter().collect();
    vars.retain(|(key, _)| !key.starts_with("TROUPE_WORKER_"));
    vars.extend([
        (env::ACTOR_ID.to_string(), request.actor_id.clone()),
        (
            env::INCARNATION.to_string(),
            request.incarnation.to_string(),
        ),
        (
            env::HEAD_ADDRESS.to_string(),
            agent.config.head_address.clone(),
        ),
        (env::NODE_ID.to_string(), agent.node_id()),
        (env::BIND_HOST.to_string(), agent.config.host.clone()),
        (env::SESSION.to_string(), request.owner_session.clone()),
        (env::BINARY_HASH.to_string(), request.binary_hash.clone()),
        (
            env::TOKEN.to_string(),
            agent.config.token.as_str().to_string(),
        ),
        (
            env::NUM_CPUS.to_string(),
            format!("{}", request.cpu_milli as f64 / 1000.0),
        ),
        (
            "CUDA_VISIBLE_DEVICES".to_string(),
            request
                .gpu_ids
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    for pool in env::THREAD_POOLS {
        vars.push((pool.to_string(), threads.clone()));
    }
    let launch = Launch {
        actor_id: request.actor_id.clone(),
        incarnation: request.incarnation,
        executable,
        args: request.args,
        env: vars,
    };
    let (pid, exit) = agent
        .workers
        .start(launch)
        .await
        .map_err(|err| format!("starting the worker process: {err}"))?;
    tracing::info!(
        actor = request.actor_id,
        incarnation = request.incarnation,
        pid,
        "worker started"
    );
    Ok(exit)
}

/// Tells the head a worker is gone, retrying for about 6 s.
async fn report_exit(agent: &Arc<NodeAgent>, report: WorkerExitedRequest) {
    for attempt in 0..5 {
        let mut head = agent.head.clone();
        match tokio::time::timeout(Duration::from_secs(5), head.worker_exited(report.clone())).await
        {
            Ok(Ok(_)) => return,
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => return,
            _ => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
        }
    }
    tracing::warn!(
        actor = report.actor_id,
        "could not report a worker exit to the head"
    );
}

#[tonic::async_trait]
impl NodeAgentService for AgentService {
    async fn start_worker(
        &self,
        request: Request<StartWorkerRequest>,
    ) -> Result<Response<StartWorkerReply>, Status> {
        let request = request.into_inner();
        check_file_id("actor_id", &request.actor_id)?;
        check_id("binary_hash", &request.binary_hash)?;
        let agent = &self.0;
        let known: Vec<u32> = agent
            .config
            .resources
            .gpus
            .iter()
            .map(|gpu| gpu.index)
            .collect();
        if let Some(missing) = request.gpu_ids.iter().find(|id| !known.contains(id)) {
            return Err(invalid(
                "gpu_ids",
                format!("this node has no GPU {missing}"),
            ));
        }
        let log_path = agent
            .workers
            .log_path(&request.actor_id, request.incarnation);
        // The start goes on by itself: fetching a large executable must not be cut short by the
        // head's RPC deadline, and a failure is reported like any worker exit.
        tokio::spawn(start_and_watch(agent.clone(), request));
        Ok(Response::new(StartWorkerReply {
            pid: 0,
            log_path: log_path.display().to_string(),
        }))
    }

    async fn start_job(
        &self,
        request: Request<StartJobRequest>,
    ) -> Result<Response<StartJobReply>, Status> {
        let request = request.into_inner();
        check_submission_id(&request.submission_id)?;
        if request.entrypoint.trim().is_empty() {
            return Err(invalid("entrypoint", "is empty"));
        }
        let pid = super::jobs::start(&self.0, request).await?;
        Ok(Response::new(StartJobReply { pid }))
    }

    async fn stop_job(&self, request: Request<StopJobOrder>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_submission_id(&request.submission_id)?;
        let grace = Duration::from_millis(request.grace_ms.min(600_000));
        self.0.jobs.stop(&request.submission_id, grace);
        Ok(Response::new(Empty {}))
    }

    async fn stop_worker(
        &self,
        request: Request<StopWorkerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        check_file_id("actor_id", &request.actor_id)?;
        let grace = Duration::from_millis(request.grace_ms.min(60_000));
        self.0
            .workers
            .stop(&request.actor_id, request.incarnation, grace);
        Ok(Response::new(Empty {}))
    }

    async fn read_worker_log(
        &self,
        request: Request<ReadWorkerLogRequest>,
    ) -> Result<Response<LogChunk>, Status> {
        let request = request.into_inner();
        check_file_id("actor_id", &request.actor_id)?;
        let path = self
            .0
            .workers
            .log_path(&request.actor_id, request.incarnation);
        let chunk = tokio::task::spawn_blocking(move || super::read_log::read(&path, &request))
            .await
            .map_err(|err| Status::internal(format!("reading the log: {err}")))??;
        Ok(Response::new(chunk))
    }
}
