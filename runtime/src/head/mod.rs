//! The head: the control plane. One tonic server with the `Nodes`, `Actors`, `Cluster` and `Jobs`
//! services, all behind the cluster token; it owns the scheduler and the cluster's state (kept
//! in redb under its data directory, written before callers are answered, and restored when a
//! head starts on the same directory), watches node heartbeats, sends start and stop orders to
//! node agents, stores uploaded executables and packages, and serves Prometheus metrics and,
//! when asked, the web dashboard (`dashboard/`).

mod autoscale;
mod binaries;
mod dashboard;
mod jobs;
mod logs;
pub(crate) use binaries::is_sha256_hex;
mod metric_history;
pub(crate) mod metrics;
mod pipelines;
mod service;
mod state;
mod store;

use crate::error::{Error, Result};
use crate::rpc::{AuthChannel, Token};
use binaries::BinaryStore;
use state::{HeadState, Order};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use troupe_proto::node_agent_client::NodeAgentClient;
use troupe_proto::{StopWorkerRequest, WorkerExitedRequest};

/// How the head runs.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Address to serve gRPC on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Where the token, uploaded executables and packages, and job records and logs are kept.
    pub data_dir: PathBuf,
    /// Port for Prometheus metrics over HTTP, if any (0 picks a free one).
    pub metrics_bind: Option<SocketAddr>,
    /// Where to serve the web dashboard (login with the cluster token), if anywhere (port 0
    /// picks a free one).
    pub dashboard_bind: Option<SocketAddr>,
    /// How often node agents heartbeat.
    pub heartbeat_interval: Duration,
    /// A node silent for this long is declared dead.
    pub node_timeout: Duration,
    /// The placement policy (`scheduler::POLICY_NAMES`); the default is fragmentation-aware.
    pub policy: String,
    /// Dead actors kept for `troupe status` and lookups; beyond this many, the oldest are
    /// forgotten, so a long run's head does not grow without bound.
    pub dead_actor_history: usize,
    /// Node types, rules and provider of the autoscaler, if the cluster grows and shrinks.
    pub autoscaler: Option<crate::autoscaler::AutoscalerConfig>,
    /// The `troupe` executable the local provider starts nodes with (default: this process's).
    pub troupe_binary: Option<PathBuf>,
    /// The autoscaler's provider when it is built outside this crate (the `kubernetes` one);
    /// it replaces the one the config names.
    pub provider: Option<crate::autoscaler::provider::ExternalProvider>,
}

impl HeadConfig {
    /// Loopback, a free port, the given data directory, heartbeats every 500 ms, dead after 5 s.
    pub fn local(data_dir: PathBuf) -> Self {
        HeadConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            metrics_bind: None,
            dashboard_bind: None,
            heartbeat_interval: Duration::from_millis(500),
            node_timeout: Duration::from_secs(5),
            policy: crate::scheduler::POLICY_NAMES[0].to_string(),
            dead_actor_history: state::DEFAULT_DEAD_ACTOR_HISTORY,
            autoscaler: None,
            troupe_binary: None,
            provider: None,
        }
    }
}

/// The shared head object behind every service.
pub(crate) struct Head {
    state: Mutex<HeadState>,
    changed: watch::Sender<u64>,
    config: HeadConfig,
    binaries: BinaryStore,
    /// Working-directory packages of jobs.
    packages: BinaryStore,
    /// Commits every change of the state to `data_dir/state.redb`.
    state_writer: store::StateWriter,
    job_logs: jobs::LogFiles,
    /// Bumped whenever a job's log grows or a job ends, for log tails.
    logs_changed: watch::Sender<u64>,
    started: Instant,
    /// One channel per node agent address, reused for every order.
    agents: Mutex<HashMap<String, NodeAgentClient<AuthChannel>>>,
    /// The cluster token: every RPC to the head, node agents and workers carries it.
    token: Token,
    /// The autoscaler, when the head runs one.
    autoscaler: Option<Arc<autoscale::Autoscaler>>,
    /// Pipelines drivers report, for the dashboard.
    pipelines: pipelines::Pipelines,
}

/// A running head; dropping it stops the server.
pub struct HeadHandle {
    pub address: SocketAddr,
    pub metrics_address: Option<SocketAddr>,
    /// Where the web dashboard serves, if it does.
    pub dashboard_address: Option<SocketAddr>,
    /// The cluster token (also in `data_dir/token`).
    pub token: Token,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    head: Arc<Head>,
}

impl Drop for HeadHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl HeadHandle {
    /// Waits until the server stops (it runs until the process ends or the handle drops).
    pub async fn wait(&mut self) {
        if let Some(server) = self.tasks.first_mut() {
            let _ = server.await;
        }
    }

    /// Waits (at most 10 s) until every change so far is on disk: call it before the process
    /// exits.
    pub async fn flush(&self) {
        if let Err(why) = self.head.state_writer.durable().await {
            tracing::warn!(%why, "the head's state is not all on disk");
        }
    }
}

/// Starts a head on the current tokio runtime.
pub async fn start(config: HeadConfig) -> Result<HeadHandle> {
    crate::private_fs::ensure_private_dir(&config.data_dir).map_err(|why| Error::Invalid {
        what: "head data directory".to_string(),
        why,
    })?;
    let token = Token::load_or_create(&config.data_dir).map_err(|err| Error::Invalid {
        what: "cluster token".to_string(),
        why: err.to_string(),
    })?;
    let binaries = BinaryStore::open(
        config.data_dir.join("binaries"),
        "executable",
        4 << 30,
        None,
    )?;
    let packages = BinaryStore::open(
        config.data_dir.join("packages"),
        "package",
        jobs::MAX_PACKAGE_BYTES,
        Some(jobs::check_package),
    )?;
    if let Some(autoscaler) = &config.autoscaler {
        let local = matches!(
            autoscaler.provider,
            crate::autoscaler::config::ProviderConfig::Local { .. }
        );
        if !local && autoscaler.head_address.is_none() && config.bind.ip().is_unspecified() {
            return Err(Error::Invalid {
                what: "autoscaler config".to_string(),
                why: format!(
                    "the head binds {}, which launched node agents cannot dial: set head_address (for example the head's Service name and port)",
                    config.bind
                ),
            });
        }
    }
    let autoscaler = match &config.autoscaler {
        Some(autoscaler) => Some(Arc::new(autoscale::Autoscaler::new(
            autoscaler.clone(),
            &config.data_dir,
            config.troupe_binary.clone(),
            config.provider.clone(),
        )?)),
        None => None,
    };
    let state_store = store::StateStore::open(&config.data_dir)?;
    let snapshot = state_store.load()?;
    let job_logs = jobs::LogFiles::open(config.data_dir.join("job-logs"))
        .map_err(|err| Error::io("creating the job log directory", err))?;
    let mut state = HeadState::default();
    state.dead_actor_history = Some(config.dead_actor_history);
    let policy = crate::scheduler::by_name(&config.policy, 0).ok_or_else(|| Error::Invalid {
        what: "policy".to_string(),
        why: format!(
            "`{}`: expected one of {}",
            config.policy,
            crate::scheduler::POLICY_NAMES.join(", ")
        ),
    })?;
    state.scheduler = crate::scheduler::Scheduler::with_policy(policy);
    state.scheduler.track_holder_changes();
    // The scheduler's clock goes on from the cluster's first start (claims restored below
    // count the time their work has held its resources from it).
    state.epoch = Some(state::instant_of(
        state_store.epoch_unix_ms()?,
        Instant::now(),
    ));
    let restored = state.restore(snapshot, session_grace(&config), Instant::now())?;
    if restored != state::Restored::default() {
        tracing::info!(
            ?restored,
            "restored the cluster's state from a previous head"
        );
    }
    if let Some(config) = &config.autoscaler {
        let types: Vec<_> = config
            .node_types
            .iter()
            .map(|(name, t)| (name.clone(), t.capacity(name), t.max))
            .collect();
        state.set_node_types(&types);
    }
    let state_writer = store::StateWriter::start(state_store)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|err| Error::io(format!("binding the head to {}", config.bind), err))?;
    let address = listener
        .local_addr()
        .map_err(|err| Error::io("reading the head's address", err))?;
    let (changed, _) = watch::channel(0);
    let head = Arc::new(Head {
        state: Mutex::new(state),
        changed,
        config: config.clone(),
        binaries,
        packages,
        state_writer,
        job_logs,
        logs_changed: watch::channel(0).0,
        token: token.clone(),
        started: Instant::now(),
        agents: Mutex::new(HashMap::new()),
        autoscaler: autoscaler.clone(),
        pipelines: pipelines::Pipelines::default(),
    });
    let mut tasks = vec![tokio::spawn(service::serve(head.clone(), listener))];
    tasks.push(tokio::spawn(watch_nodes(head.clone())));
    if let Some(autoscaler) = autoscaler {
        tasks.push(tokio::spawn(autoscale::run(
            head.clone(),
            autoscaler,
            address.to_string(),
        )));
    }
    // The HTTP servers: if either cannot bind, the tasks spawned above (the gRPC server among
    // them) are stopped before the error is returned, so nothing serves on after a failed start.
    let http = async {
        let mut metrics_address = None;
        if let Some(bind) = config.metrics_bind {
            let (bound, task) = metrics::serve(head.clone(), bind).await?;
            metrics_address = Some(bound);
            tasks.push(task);
        }
        let mut dashboard_address = None;
        if let Some(bind) = config.dashboard_bind {
            let history = Arc::new(metric_history::MetricHistory::default());
            let (bound, task) = dashboard::serve(head.clone(), history.clone(), bind).await?;
            tasks.push(task);
            tasks.push(tokio::spawn(metric_history::run(head.clone(), history)));
            tracing::info!(address = %bound, "dashboard serving");
            dashboard_address = Some(bound);
        }
        Ok::<_, Error>((metrics_address, dashboard_address))
    }
    .await;
    let (metrics_address, dashboard_address) = match http {
        Ok(addresses) => addresses,
        Err(err) => {
            for task in &tasks {
                task.abort();
            }
            return Err(err);
        }
    };
    tracing::info!(%address, data_dir = %config.data_dir.display(), "head serving");
    Ok(HeadHandle {
        address,
        metrics_address,
        dashboard_address,
        token,
        tasks,
        head,
    })
}

impl Head {
    /// Runs `change` under the state lock, then wakes waiters and carries out the orders.
    fn update<R>(self: &Arc<Self>, change: impl FnOnce(&mut HeadState) -> (R, Vec<Order>)) -> R {
        let (result, orders) = {
            let mut state = match self.state.lock() {
                Ok(state) => state,
                Err(poisoned) => poisoned.into_inner(),
            };
            let outcome = change(&mut state);
            // Queued under the lock, so records reach the disk in the order they changed.
            let changes = state.take_changes(Instant::now());
            self.state_writer.send(changes);
            outcome
        };
        self.changed.send_modify(|version| *version += 1);
        for order in orders {
            self.carry_out(order);
        }
        result
    }

    /// Refuses new work once the head can no longer write its state.
    fn writable(&self) -> Result<(), tonic::Status> {
        match self.state_writer.failure() {
            None => Ok(()),
            Some(why) => Err(unwritable(&why)),
        }
    }

    /// Waits until every change so far is on disk: call it before answering a caller whose
    /// request changed the state.
    async fn durable(&self) -> Result<(), tonic::Status> {
        self.state_writer
            .durable()
            .await
            .map_err(|why| unwritable(&why))
    }

    /// Runs `look` under the state lock with write access, without waking waiters (for views
    /// that need trial placements, such as pending demand).
    fn inspect<R>(&self, look: impl FnOnce(&mut HeadState) -> R) -> R {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        look(&mut state)
    }

    /// Reads the state without changing it.
    fn read<R>(&self, look: impl FnOnce(&HeadState) -> R) -> R {
        let state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        look(&state)
    }

    /// A client for the node agent at `address` (the channel connects on first use).
    fn agent(&self, address: &str) -> Result<NodeAgentClient<AuthChannel>, String> {
        let mut agents = match self.agents.lock() {
            Ok(agents) => agents,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(agent) = agents.get(address) {
            return Ok(agent.clone());
        }
        let agent = NodeAgentClient::new(crate::rpc::connect_lazy(address, &self.token)?);
        agents.insert(address.to_string(), agent.clone());
        Ok(agent)
    }

    fn carry_out(self: &Arc<Self>, order: Order) {
        let head = self.clone();
        tokio::spawn(async move {
            match order {
                Order::Start {
                    node_address,
                    request,
                } => {
                    let actor_id = request.actor_id.clone();
                    let incarnation = request.incarnation;
                    let outcome = match head.agent(&node_address) {
                        Ok(mut agent) => tokio::time::timeout(
                            Duration::from_secs(30),
                            agent.start_worker(request),
                        )
                        .await
                        .map_err(|_| "the node agent did not answer within 30 s".to_string())
                        .and_then(|reply| reply.map_err(|status| status.message().to_string())),
                        Err(err) => Err(err),
                    };
                    match outcome {
                        Ok(reply) => {
                            let pid = reply.into_inner().pid;
                            head.update(|state| {
                                if let Some(actor) = state.actors.get_mut(&actor_id) {
                                    if actor.info.incarnation == incarnation && actor.info.pid == 0
                                    {
                                        actor.info.pid = pid;
                                    }
                                }
                                ((), Vec::new())
                            });
                        }
                        Err(why) => {
                            tracing::warn!(actor = actor_id, %why, "could not start worker");
                            head.worker_exited(WorkerExitedRequest {
                                actor_id,
                                incarnation,
                                start_error: why,
                                ..WorkerExitedRequest::default()
                            });
                        }
                    }
                }
                Order::StartJob {
                    node_address,
                    request,
                } => head.start_job(node_address, request).await,
                Order::StopJob {
                    node_address,
                    order,
                } => head.stop_job(node_address, order).await,
                Order::Stop {
                    node_address,
                    actor_id,
                    incarnation,
                    grace_ms,
                } => {
                    if let Ok(mut agent) = head.agent(&node_address) {
                        let request = StopWorkerRequest {
                            actor_id: actor_id.clone(),
                            grace_ms,
                            incarnation,
                        };
                        let answer = tokio::time::timeout(
                            Duration::from_secs(10) + Duration::from_millis(grace_ms),
                            agent.stop_worker(request),
                        )
                        .await;
                        if !matches!(answer, Ok(Ok(_))) {
                            tracing::warn!(
                                actor = actor_id,
                                node = node_address,
                                "stop order not confirmed"
                            );
                        }
                    }
                }
            }
        });
    }

    /// A worker exited or could not start.
    fn worker_exited(self: &Arc<Self>, report: WorkerExitedRequest) {
        let reason = describe_exit(&report);
        self.update(|state| {
            // A worker that could not even be started (no executable, exec failed) would fail
            // the same way again.
            let failure = state::Failure {
                reason,
                stop_worker: false,
                fatal: !report.start_error.is_empty(),
            };
            let mut orders = state.victim_exited(&report.actor_id, report.incarnation);
            orders.extend(state.worker_failed(&report.actor_id, report.incarnation, failure));
            ((), orders)
        });
    }
}

/// The head's refusal when its state is not on disk. `INTERNAL`, not `UNAVAILABLE`: the head
/// did answer (clients resend only what never reached a head), and the request may have
/// changed its state in memory, so sending it again would not be safe.
fn unwritable(why: &str) -> tonic::Status {
    tonic::Status::internal(format!(
        "the head cannot write its state ({why}), so it takes no new work: free the disk or fix \
         --data-dir, then restart the head (what it acknowledged before is on disk)"
    ))
}

/// How long owner sessions of live actors may take to reconnect after a head restart.
fn session_grace(config: &HeadConfig) -> Duration {
    (config.node_timeout * 3).max(Duration::from_secs(10))
}

/// Words for how a worker ended.
fn describe_exit(report: &WorkerExitedRequest) -> String {
    let mut reason = if !report.start_error.is_empty() {
        format!("its worker could not start: {}", report.start_error)
    } else if report.signal != 0 {
        format!("its worker process was killed by signal {}", report.signal)
    } else {
        format!("its worker process exited with code {}", report.exit_code)
    };
    let tail = report.log_tail.trim();
    if !tail.is_empty() {
        reason.push_str("; last output:\n");
        reason.push_str(tail);
    }
    reason
}

/// Declares nodes dead when their heartbeats stop, and places actors whose restart back-off ran out.
async fn watch_nodes(head: Arc<Head>) {
    let period = (head.config.heartbeat_interval / 2).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let timeout = head.config.node_timeout;
        // Running jobs restored from disk wait this long for their node to claim them.
        let claim_patience = timeout * 3;
        let due = head.read(|state| {
            let now = Instant::now();
            state.backoff_expired(now)
                || state.deferred_due(now)
                || state.sessions_expired(now)
                || state.unclaimed_jobs_expired(now, claim_patience)
                || state
                    .nodes
                    .values()
                    .any(|node| node.alive && now.duration_since(node.last_heartbeat) > timeout)
        });
        if due {
            head.update(|state| {
                let now = Instant::now();
                let mut orders = state.fail_unclaimed_jobs(now, claim_patience);
                orders.extend(state.expire_sessions(now));
                orders.extend(state.release_deferred(now, true));
                orders.extend(state.check_nodes(now, timeout));
                ((), orders)
            });
        }
    }
}
