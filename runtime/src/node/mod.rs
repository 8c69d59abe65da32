//! The node agent: registers the node's resources with the head, heartbeats, starts and stops
//! worker processes and job entrypoints on the head's orders (each with its devices and thread
//! counts in its environment, its output captured to a log file), and reports how they exit.

mod executables;
mod jobs;
mod output;
mod read_log;
pub mod resources;
mod service;
mod spawner;
mod workers;

pub(crate) use service::env as service_env;
pub(crate) use workers::log_tail;

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use troupe_proto::nodes_client::NodesClient;
use troupe_proto::{HeartbeatRequest, NodeResources, RegisterNodeRequest};
use workers::WorkerTable;

/// How a node agent runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The head's gRPC address (host:port).
    pub head_address: String,
    /// The host this agent and its workers bind to and advertise.
    pub host: String,
    /// Port for the agent's own gRPC server (0 picks a free one).
    pub port: u16,
    /// What this node offers.
    pub resources: NodeResources,
    /// Worker logs and the executable cache live here.
    pub work_dir: PathBuf,
    /// Executables this agent can run without fetching them: hash to path (an embedded
    /// cluster's own driver binary).
    pub local_executables: HashMap<String, PathBuf>,
    /// The cluster token (the head's `token` file).
    pub token: crate::rpc::Token,
}

pub(crate) struct NodeAgent {
    config: NodeConfig,
    node_id: Mutex<String>,
    workers: WorkerTable,
    jobs: jobs::JobTable,
    spawner: spawner::Spawner,
    executables: executables::BlobCache,
    packages: executables::BlobCache,
    head: NodesClient<crate::rpc::AuthChannel>,
}

/// A running node agent. Dropping it kills its workers and stops it.
pub struct NodeHandle {
    agent: Arc<NodeAgent>,
    pub address: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// The id the head gave this node.
    pub fn node_id(&self) -> String {
        self.agent
            .node_id
            .lock()
            .map(|id| id.clone())
            .unwrap_or_default()
    }

    /// Kills every worker of this node now.
    pub fn kill_workers(&self) {
        self.agent.workers.kill_all();
    }

    /// Kills every job entrypoint of this node now.
    pub fn kill_jobs(&self) {
        self.agent.jobs.kill_all();
    }

    /// Runs until the process is stopped.
    pub async fn wait(mut self) {
        if let Some(server) = self.tasks.first_mut() {
            let _ = server.await;
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.agent.workers.kill_all();
        self.agent.jobs.kill_all();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts a node agent on the current tokio runtime and registers it with the head.
pub async fn start(config: NodeConfig) -> Result<NodeHandle> {
    crate::private_fs::ensure_private_dir(&config.work_dir).map_err(|why| Error::Invalid {
        what: "node work directory".to_string(),
        why,
    })?;
    std::fs::create_dir_all(config.work_dir.join("logs"))
        .map_err(|err| Error::io(format!("creating {}", config.work_dir.display()), err))?;
    let channel = crate::rpc::connect_lazy(&config.head_address, &config.token).map_err(|why| {
        Error::Invalid {
            what: "head address".to_string(),
            why,
        }
    })?;
    let head =
        NodesClient::new(channel.clone()).max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|err| {
            Error::io(
                format!("binding the node agent to {}:{}", config.host, config.port),
                err,
            )
        })?;
    let port = listener
        .local_addr()
        .map_err(|err| Error::io("reading the node agent's address", err))?
        .port();
    let address = format!("{}:{port}", config.host);
    let spawner = spawner::Spawner::start()?;
    let agent = Arc::new(NodeAgent {
        executables: executables::BlobCache::new(
            executables::BlobKind::Executable,
            config.work_dir.join("executables"),
            config.local_executables.clone(),
            head.clone(),
        ),
        packages: executables::BlobCache::new(
            executables::BlobKind::Package,
            config.work_dir.join("packages"),
            HashMap::new(),
            head.clone(),
        ),
        workers: WorkerTable::new(config.work_dir.join("logs"), spawner.clone()),
        jobs: jobs::JobTable::new(config.work_dir.join("jobs")),
        spawner,
        config,
        node_id: Mutex::new(String::new()),
        head,
    });
    let server = tokio::spawn(service::serve(agent.clone(), listener));
    let (interval, node_timeout) = agent.register(&address, Duration::from_secs(30)).await?;
    let heartbeat = tokio::spawn(heartbeat_loop(
        agent.clone(),
        address.clone(),
        interval,
        node_timeout,
    ));
    Ok(NodeHandle {
        agent,
        address,
        tasks: vec![server, heartbeat],
    })
}

impl NodeAgent {
    fn node_id(&self) -> String {
        self.node_id.lock().map(|id| id.clone()).unwrap_or_default()
    }

    /// Registers (or registers again), retrying until `patience` runs out.
    /// Registers (or registers again), retrying until `patience` runs out. Returns the heartbeat
    /// interval and the head's node timeout.
    async fn register(&self, address: &str, patience: Duration) -> Result<(Duration, Duration)> {
        let deadline = tokio::time::Instant::now() + patience;
        let hostname = hostname();
        loop {
            let request = RegisterNodeRequest {
                node_id: self.node_id(),
                address: address.to_string(),
                resources: Some(self.config.resources.clone()),
                hostname: hostname.clone(),
                running_jobs: self.jobs.running(),
            };
            let mut head = self.head.clone();
            match tokio::time::timeout(Duration::from_secs(5), head.register_node(request)).await {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    if let Ok(mut id) = self.node_id.lock() {
                        *id = reply.node_id.clone();
                    }
                    tracing::info!(node = reply.node_id, %address, "registered with the head");
                    let interval =
                        Duration::from_millis(reply.heartbeat_interval_ms.clamp(50, 10_000));
                    let timeout = Duration::from_millis(reply.node_timeout_ms.max(500));
                    return Ok((interval, timeout));
                }
                Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(Error::rpc("registering with the head", status));
                }
                outcome => {
                    if tokio::time::Instant::now() >= deadline {
                        let why = match outcome {
                            Ok(Err(status)) => status.message().to_string(),
                            _ => "no answer".to_string(),
                        };
                        return Err(Error::Rpc {
                            context: format!(
                                "registering with the head at {}",
                                self.config.head_address
                            ),
                            code: tonic::Code::Unavailable,
                            status_message: why,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Heartbeats; registers again when the head asks; and stops every worker once the head has
/// been unreachable for most of its node timeout, before the head places those actors elsewhere,
/// so that no actor ever runs twice.
async fn heartbeat_loop(
    agent: Arc<NodeAgent>,
    address: String,
    mut interval: Duration,
    mut node_timeout: Duration,
) {
    let mut failures = 0_u32;
    let mut last_success = tokio::time::Instant::now();
    let mut fenced = false;
    loop {
        tokio::time::sleep(interval).await;
        let request = HeartbeatRequest {
            node_id: agent.node_id(),
            running: agent.workers.running(),
            jobs: agent.jobs.active(),
        };
        let mut head = agent.head.clone();
        let rpc_timeout =
            (node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        match tokio::time::timeout(rpc_timeout, head.heartbeat(request)).await {
            Ok(Ok(reply)) => {
                failures = 0;
                fenced = false;
                last_success = tokio::time::Instant::now();
                if reply.into_inner().reregister {
                    // The head gave this node up: its actors run elsewhere now. Never run twice.
                    tracing::warn!("the head no longer knows this node: stopping its workers and registering again");
                    agent.workers.kill_all();
                    match agent.register(&address, Duration::from_secs(30)).await {
                        Ok((new_interval, new_timeout)) => {
                            interval = new_interval;
                            node_timeout = new_timeout;
                        }
                        Err(err) => tracing::error!(%err, "could not register again"),
                    }
                }
            }
            _ => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(
                        failures,
                        head = agent.config.head_address,
                        "heartbeat failed"
                    );
                }
                if !fenced && last_success.elapsed() > node_timeout.mul_f64(0.8) {
                    tracing::error!(
                        silent_ms = last_success.elapsed().as_millis() as u64,
                        "cut off from the head: stopping all workers before the head places their actors elsewhere"
                    );
                    agent.workers.kill_all();
                    fenced = true;
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}
