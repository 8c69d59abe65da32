//! What the head reports about itself: the cluster status view (nodes, GPUs and who holds them,
//! actors) and Prometheus metrics over plain HTTP (`GET /metrics`).

use super::state::HeadState;
use super::Head;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use troupe_proto::{ActorState, ClusterStatusReply, GpuUsage, JobInfo, JobStatus, NodeStatus};

/// The status view: every node with its usage, every actor, job and placement group, the
/// policy, and the pending demand.
pub(super) fn status_of(state: &mut HeadState) -> ClusterStatusReply {
    let demand = state.pending_demand();
    let pending_demand = troupe_proto::PendingDemand {
        shapes: demand
            .items
            .iter()
            .map(|item| troupe_proto::DemandShape {
                resources: Some(resources_of(&item.request)),
                count: item.count,
            })
            .collect(),
        cpu_milli: demand.cpu_milli,
        memory_bytes: demand.memory_bytes,
        gpu_milli: demand.gpu_milli,
    };
    let placement_groups = state.groups.values().map(|g| g.snapshot()).collect();
    let now = Instant::now();
    let nodes = state
        .nodes
        .values()
        .map(|node| {
            let usage = state.scheduler.usage(&node.id);
            let gpus = node
                .resources
                .gpus
                .iter()
                .enumerate()
                .map(|(position, gpu)| GpuUsage {
                    index: gpu.index,
                    model: gpu.model.clone(),
                    milli_used: usage
                        .as_ref()
                        .and_then(|u| u.gpu_milli.get(position).copied())
                        .unwrap_or(0),
                    actor_ids: state
                        .actors
                        .values()
                        .filter(|actor| {
                            actor.info.node_id == node.id
                                && actor.allocation.is_some()
                                && actor.info.gpus.iter().any(|share| share.index == gpu.index)
                        })
                        .map(|actor| actor.info.id.clone())
                        .collect(),
                })
                .collect();
            NodeStatus {
                id: node.id.clone(),
                address: node.address.clone(),
                hostname: node.hostname.clone(),
                alive: node.alive,
                total: Some(node.resources.clone()),
                cpu_milli_used: usage.as_ref().map(|u| u.cpu_milli).unwrap_or(0),
                memory_bytes_used: usage.as_ref().map(|u| u.memory_bytes).unwrap_or(0),
                custom_used: usage
                    .map(|u| u.custom.into_iter().collect())
                    .unwrap_or_default(),
                gpus,
                ms_since_heartbeat: now.duration_since(node.last_heartbeat).as_millis() as u64,
            }
        })
        .collect();
    let mut actors: Vec<_> = state
        .actors
        .values()
        .map(|actor| actor.info.clone())
        .collect();
    actors.sort_by(|a, b| a.id.cmp(&b.id));
    let mut jobs: Vec<_> = state
        .jobs
        .values()
        .map(|job| JobInfo {
            log_tail: String::new(),
            ..job.info.clone()
        })
        .collect();
    jobs.sort_by(|a, b| {
        (a.submit_time_ms, &a.submission_id).cmp(&(b.submit_time_ms, &b.submission_id))
    });
    ClusterStatusReply {
        nodes,
        actors,
        jobs,
        placement_groups,
        pending_demand: Some(pending_demand),
        policy: state.scheduler.policy_name().to_string(),
        autoscaler: None,
    }
}

/// The wire form of a scheduler request.
fn resources_of(request: &crate::scheduler::Request) -> troupe_proto::ResourceRequest {
    troupe_proto::ResourceRequest {
        cpu_milli: request.cpu_milli,
        memory_bytes: request.memory_bytes,
        gpu_milli: request.gpu_milli,
        custom: request.custom.clone().into_iter().collect(),
        label_selector: request.label_selector.clone().into_iter().collect(),
        gpu_models: request.gpu_models.clone(),
        node_id: String::new(),
        node_soft: false,
    }
}

/// The metrics page in Prometheus text format.
pub(super) fn render(state: &HeadState, uptime: Duration) -> String {
    let mut out = String::new();
    let alive = state.nodes.values().filter(|node| node.alive).count();
    let dead = state.nodes.len() - alive;
    let _ = writeln!(
        out,
        "# HELP troupe_nodes Nodes known to the head, by state."
    );
    let _ = writeln!(out, "# TYPE troupe_nodes gauge");
    let _ = writeln!(out, "troupe_nodes{{state=\"alive\"}} {alive}");
    let _ = writeln!(out, "troupe_nodes{{state=\"dead\"}} {dead}");
    let _ = writeln!(out, "# HELP troupe_actors Actors, by state.");
    let _ = writeln!(out, "# TYPE troupe_actors gauge");
    for actor_state in [
        ActorState::Pending,
        ActorState::Starting,
        ActorState::Alive,
        ActorState::Restarting,
        ActorState::Dead,
    ] {
        let count = state
            .actors
            .values()
            .filter(|actor| actor.info.state() == actor_state)
            .count();
        let label = actor_state
            .as_str_name()
            .trim_start_matches("ACTOR_STATE_")
            .to_lowercase();
        let _ = writeln!(out, "troupe_actors{{state=\"{label}\"}} {count}");
    }
    let _ = writeln!(out, "# HELP troupe_jobs Jobs, by status.");
    let _ = writeln!(out, "# TYPE troupe_jobs gauge");
    for status in [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Stopped,
    ] {
        let count = state
            .jobs
            .values()
            .filter(|job| job.info.status() == status)
            .count();
        let label = crate::jobs::status_name(status).to_lowercase();
        let _ = writeln!(out, "troupe_jobs{{status=\"{label}\"}} {count}");
    }
    let counters = &state.counters;
    let _ = writeln!(
        out,
        "# HELP troupe_actor_restarts_total Worker restarts after a crash or node loss."
    );
    let _ = writeln!(out, "# TYPE troupe_actor_restarts_total counter");
    let _ = writeln!(
        out,
        "troupe_actor_restarts_total {}",
        counters.restarts_total
    );
    let _ = writeln!(out, "# HELP troupe_actors_created_total Actors created.");
    let _ = writeln!(out, "# TYPE troupe_actors_created_total counter");
    let _ = writeln!(
        out,
        "troupe_actors_created_total {}",
        counters.actors_created_total
    );
    let _ = writeln!(
        out,
        "# HELP troupe_actor_calls_total Actor method calls served, as reported by workers."
    );
    let _ = writeln!(out, "# TYPE troupe_actor_calls_total counter");
    let _ = writeln!(out, "troupe_actor_calls_total {}", counters.calls_total);
    let _ = writeln!(
        out,
        "# HELP troupe_actor_lookups_total Actor lookups served (GetActor)."
    );
    let _ = writeln!(out, "# TYPE troupe_actor_lookups_total counter");
    let _ = writeln!(out, "troupe_actor_lookups_total {}", counters.lookups_total);
    let _ = writeln!(
        out,
        "# HELP troupe_preemptions_total Holders (actors, gangs, placement groups) evicted by higher-priority work."
    );
    let _ = writeln!(out, "# TYPE troupe_preemptions_total counter");
    let _ = writeln!(
        out,
        "troupe_preemptions_total {}",
        counters.preemptions_total
    );
    let _ = writeln!(
        out,
        "# HELP troupe_pending_requests Actors and placement groups waiting for resources."
    );
    let _ = writeln!(out, "# TYPE troupe_pending_requests gauge");
    let _ = writeln!(out, "troupe_pending_requests {}", state.pending.len());
    let _ = writeln!(
        out,
        "# HELP troupe_scheduling_latency_seconds From request (or death) to placement."
    );
    let _ = writeln!(out, "# TYPE troupe_scheduling_latency_seconds histogram");
    counters
        .scheduling_latency
        .write_prometheus(&mut out, "troupe_scheduling_latency_seconds");
    let _ = writeln!(
        out,
        "# HELP troupe_head_uptime_seconds Seconds since the head started."
    );
    let _ = writeln!(out, "# TYPE troupe_head_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "troupe_head_uptime_seconds {:.3}",
        uptime.as_secs_f64()
    );
    out
}

impl Head {
    /// The metrics page: the head's own and, when it runs one, the autoscaler's.
    pub(super) fn metrics_text(&self) -> String {
        let mut text = self.read(|state| render(state, self.started.elapsed()));
        if let Some(autoscaler) = &self.autoscaler {
            autoscaler.render_metrics(&mut text);
        }
        text
    }
}

/// Serves `GET /metrics` (any other path is 404) on `bind`.
pub(super) async fn serve(
    head: Arc<Head>,
    bind: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|err| Error::io(format!("binding metrics to {bind}"), err))?;
    let address = listener
        .local_addr()
        .map_err(|err| Error::io("reading the metrics address", err))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = vec![0_u8; 4096];
                let read =
                    match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut request))
                        .await
                    {
                        Ok(Ok(read)) => read,
                        _ => return,
                    };
                let line = String::from_utf8_lossy(&request[..read]);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                    ("200 OK", head.metrics_text())
                } else {
                    ("404 Not Found", "not found: try /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((address, task))
}
