//! What the dashboard's cluster pages show, as plain serializable records built from the head's
//! status view (`ClusterStatusReply`): nodes and their GPU maps, actors, placement groups,
//! pending demand and jobs. The templates and the JSON endpoints both render these; no HTML is
//! made here (escaping is the templates' job).

use super::gpu_map::{actor_link, GpuCell, Holders, JobGpus};
use serde::Serialize;
use troupe_proto::{
    ActorInfo, ActorState, AutoscalerStatus, ClusterStatusReply, Incarnation, JobInfo, NodeStatus,
    PlacementGroupInfo, ResourceRequest,
};

/// A link to an actor: its name (or id, when unnamed) and its page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActorLink {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) href: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeView {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) hostname: String,
    pub(crate) alive: bool,
    pub(crate) cpu: String,
    pub(crate) cpu_percent: u64,
    pub(crate) memory: String,
    pub(crate) memory_percent: u64,
    pub(crate) custom: Vec<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) gpus: Vec<GpuCell>,
    pub(crate) heartbeat: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActorView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) href: String,
    pub(crate) logs_href: String,
    pub(crate) type_name: String,
    pub(crate) state: String,
    pub(crate) restarts: String,
    pub(crate) incarnation: u64,
    pub(crate) node_id: String,
    pub(crate) node_address: String,
    pub(crate) resources: String,
    pub(crate) gpus: String,
    pub(crate) priority: i32,
    pub(crate) preemptible: bool,
    pub(crate) pending_reason: String,
    pub(crate) death_reason: String,
    pub(crate) pid: u32,
    pub(crate) placement_group: String,
    pub(crate) detached: bool,
    pub(crate) preemptions: u32,
    pub(crate) history: Vec<IncarnationView>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct IncarnationView {
    pub(crate) incarnation: u64,
    pub(crate) node_id: String,
    pub(crate) node_address: String,
    pub(crate) started: String,
    pub(crate) ended: String,
    pub(crate) exit_reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BundleView {
    pub(crate) index: usize,
    pub(crate) resources: String,
    pub(crate) node_id: String,
    pub(crate) gpus: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct GroupView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) strategy: String,
    pub(crate) state: String,
    pub(crate) priority: i32,
    pub(crate) preemptible: bool,
    pub(crate) pending_reason: String,
    pub(crate) reschedules: u32,
    pub(crate) bundles: Vec<BundleView>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DemandView {
    pub(crate) resources: String,
    pub(crate) count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LaunchView {
    pub(crate) launch_id: String,
    pub(crate) node_type: String,
    pub(crate) phase: String,
    pub(crate) node_id: String,
    pub(crate) for_s: String,
    pub(crate) reason: String,
    pub(crate) attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AutoscalerView {
    pub(crate) provider: String,
    pub(crate) waiting: Vec<String>,
    pub(crate) decisions: Vec<String>,
    pub(crate) launches: Vec<LaunchView>,
    pub(crate) counters: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PendingView {
    pub(crate) shapes: Vec<DemandView>,
    pub(crate) total: String,
    pub(crate) actors: Vec<ActorView>,
    pub(crate) groups: Vec<GroupView>,
    pub(crate) autoscaler: Option<AutoscalerView>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobView {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) status: String,
    pub(crate) entrypoint: String,
    pub(crate) message: String,
    pub(crate) exit: String,
    pub(crate) node_id: String,
    pub(crate) submitted: String,
    pub(crate) started: String,
    pub(crate) ended: String,
    pub(crate) log_bytes: u64,
}

/// Everything the cluster pages show, from one status view.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterView {
    pub(crate) policy: String,
    pub(crate) nodes: Vec<NodeView>,
    pub(crate) actors: Vec<ActorView>,
    pub(crate) groups: Vec<GroupView>,
    pub(crate) pending: PendingView,
    pub(crate) jobs: Vec<JobView>,
    pub(crate) counts: Counts,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Counts {
    pub(crate) nodes_alive: usize,
    pub(crate) nodes_dead: usize,
    pub(crate) actors_alive: usize,
    pub(crate) actors_pending: usize,
    pub(crate) actors_dead: usize,
    pub(crate) gpus: usize,
    pub(crate) gpus_held: usize,
    pub(crate) jobs_running: usize,
}

impl ClusterView {
    /// The view of `status`; `jobs` are the GPUs running jobs were given.
    pub(crate) fn of(status: &ClusterStatusReply, jobs: &[JobGpus]) -> ClusterView {
        let holders = Holders::new(&status.actors, &status.placement_groups, jobs);
        let nodes: Vec<NodeView> = status
            .nodes
            .iter()
            .map(|node| node_view(node, &holders))
            .collect();
        let actors: Vec<ActorView> = status.actors.iter().map(actor_view).collect();
        let groups: Vec<GroupView> = status.placement_groups.iter().map(group_view).collect();
        let pending = PendingView {
            shapes: status
                .pending_demand
                .iter()
                .flat_map(|demand| demand.shapes.iter())
                .map(|shape| DemandView {
                    resources: shape
                        .resources
                        .as_ref()
                        .map(resources_text)
                        .unwrap_or_default(),
                    count: shape.count,
                })
                .collect(),
            total: status
                .pending_demand
                .as_ref()
                .map(|demand| {
                    format!(
                        "{} CPU, {} GPU, {} memory",
                        cores(demand.cpu_milli),
                        cores(demand.gpu_milli),
                        bytes(demand.memory_bytes)
                    )
                })
                .unwrap_or_default(),
            actors: actors
                .iter()
                .filter(|actor| actor.state == "pending" || actor.state == "restarting")
                .cloned()
                .collect(),
            groups: groups
                .iter()
                .filter(|group| !group.pending_reason.is_empty() || group.state == "pending")
                .cloned()
                .collect(),
            autoscaler: status.autoscaler.as_ref().map(autoscaler_view),
        };
        let jobs: Vec<JobView> = status.jobs.iter().map(job_view).collect();
        let counts = Counts {
            nodes_alive: nodes.iter().filter(|node| node.alive).count(),
            nodes_dead: nodes.iter().filter(|node| !node.alive).count(),
            actors_alive: actors.iter().filter(|a| a.state == "alive").count(),
            actors_pending: pending.actors.len(),
            actors_dead: actors.iter().filter(|a| a.state == "dead").count(),
            gpus: nodes.iter().map(|node| node.gpus.len()).sum(),
            gpus_held: nodes
                .iter()
                .flat_map(|node| node.gpus.iter())
                .filter(|gpu| gpu.held)
                .count(),
            jobs_running: jobs.iter().filter(|job| job.status == "running").count(),
        };
        ClusterView {
            policy: status.policy.clone(),
            nodes,
            actors,
            groups,
            pending,
            jobs,
            counts,
        }
    }
}

fn node_view(node: &NodeStatus, holders: &Holders) -> NodeView {
    let total = node.total.clone().unwrap_or_default();
    let mut custom: Vec<String> = total
        .custom
        .iter()
        .map(|(name, quantity)| {
            let used = node.custom_used.get(name).copied().unwrap_or(0.0);
            format!("{name}: {used} / {quantity}")
        })
        .collect();
    custom.sort();
    let mut labels: Vec<String> = total
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    labels.sort();
    NodeView {
        id: node.id.clone(),
        address: node.address.clone(),
        hostname: node.hostname.clone(),
        alive: node.alive,
        cpu: format!(
            "{} / {} CPU",
            cores(node.cpu_milli_used),
            cores(total.cpu_milli)
        ),
        cpu_percent: percent(node.cpu_milli_used, total.cpu_milli),
        memory: format!(
            "{} / {}",
            bytes(node.memory_bytes_used),
            bytes(total.memory_bytes)
        ),
        memory_percent: percent(node.memory_bytes_used, total.memory_bytes),
        custom,
        labels,
        gpus: holders.cells(&node.id, &node.gpus),
        heartbeat: format!("{:.1} s ago", node.ms_since_heartbeat as f64 / 1000.0),
    }
}

pub(crate) fn actor_view(actor: &ActorInfo) -> ActorView {
    let link = actor_link(&actor.id, Some(&actor.name));
    ActorView {
        id: actor.id.clone(),
        name: actor.name.clone(),
        label: link.label,
        logs_href: format!("{}/logs", link.href),
        href: link.href,
        type_name: actor.type_name.clone(),
        state: state_name(actor.state()),
        restarts: match actor.max_restarts {
            -1 => format!("{} (no limit)", actor.restarts),
            max => format!("{} of {max}", actor.restarts),
        },
        incarnation: actor.incarnation,
        node_id: actor.node_id.clone(),
        node_address: actor.node_address.clone(),
        resources: actor
            .resources
            .as_ref()
            .map(resources_text)
            .unwrap_or_default(),
        gpus: actor
            .gpus
            .iter()
            .map(|gpu| match gpu.milli {
                1000 => format!("#{}", gpu.index),
                milli => format!("#{} ({milli}/1000)", gpu.index),
            })
            .collect::<Vec<_>>()
            .join(", "),
        priority: actor.priority,
        preemptible: actor.preemptible,
        pending_reason: actor.pending_reason.clone(),
        death_reason: actor.death_reason.clone(),
        pid: actor.pid,
        placement_group: actor.placement_group_id.clone(),
        detached: actor.detached,
        preemptions: actor.preemptions,
        history: actor.history.iter().map(incarnation_view).collect(),
    }
}

pub(crate) fn incarnation_view(incarnation: &Incarnation) -> IncarnationView {
    IncarnationView {
        incarnation: incarnation.incarnation,
        node_id: incarnation.node_id.clone(),
        node_address: incarnation.node_address.clone(),
        started: time_text(incarnation.started_unix_ms),
        ended: match incarnation.ended_unix_ms {
            0 => "running".to_string(),
            ms => time_text(ms),
        },
        exit_reason: incarnation.exit_reason.clone(),
    }
}

fn group_view(group: &PlacementGroupInfo) -> GroupView {
    GroupView {
        id: group.id.clone(),
        name: group.name.clone(),
        strategy: group.strategy.clone(),
        state: group
            .state()
            .as_str_name()
            .trim_start_matches("PLACEMENT_GROUP_")
            .to_lowercase(),
        priority: group.priority,
        preemptible: group.preemptible,
        pending_reason: group.pending_reason.clone(),
        reschedules: group.reschedules,
        bundles: group
            .bundles
            .iter()
            .enumerate()
            .map(|(index, bundle)| BundleView {
                index,
                resources: bundle
                    .resources
                    .as_ref()
                    .map(resources_text)
                    .unwrap_or_default(),
                node_id: bundle.node_id.clone(),
                gpus: bundle
                    .gpus
                    .iter()
                    .map(|gpu| format!("#{}", gpu.index))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
    }
}

fn autoscaler_view(autoscaler: &AutoscalerStatus) -> AutoscalerView {
    AutoscalerView {
        provider: autoscaler.provider.clone(),
        waiting: autoscaler.waiting.clone(),
        decisions: autoscaler.decisions.clone(),
        launches: autoscaler
            .nodes
            .iter()
            .map(|node| LaunchView {
                launch_id: node.launch_id.clone(),
                node_type: node.node_type.clone(),
                phase: node.phase.clone(),
                node_id: node.node_id.clone(),
                for_s: format!("{:.0} s", node.for_s),
                reason: node.reason.clone(),
                attempts: node.attempts,
            })
            .collect(),
        counters: format!(
            "{} launches, {} terminations, {} launch failures",
            autoscaler.launches, autoscaler.terminations, autoscaler.launch_failures
        ),
    }
}

pub(crate) fn job_view(job: &JobInfo) -> JobView {
    let spec = job.spec.clone().unwrap_or_default();
    JobView {
        id: job.submission_id.clone(),
        href: format!("/jobs/{}", path_segment(&job.submission_id)),
        status: crate::jobs::status_name(job.status()).to_lowercase(),
        entrypoint: spec.entrypoint,
        message: job.message.clone(),
        exit: if job.signal != 0 {
            format!("signal {}", job.signal)
        } else if job.has_exit_code {
            format!("exit {}", job.exit_code)
        } else {
            String::new()
        },
        node_id: job.node_id.clone(),
        submitted: time_text(job.submit_time_ms),
        started: time_text(job.start_time_ms),
        ended: time_text(job.end_time_ms),
        log_bytes: job.log_bytes,
    }
}

/// An actor state in lower case (`alive`, `pending`, ...).
pub(crate) fn state_name(state: ActorState) -> String {
    state
        .as_str_name()
        .trim_start_matches("ACTOR_STATE_")
        .to_lowercase()
}

/// A resource request in words: `1 CPU, 1 GPU, 512.0 MiB, disk=2`.
pub(crate) fn resources_text(request: &ResourceRequest) -> String {
    let mut parts = vec![format!("{} CPU", cores(request.cpu_milli))];
    if request.gpu_milli > 0 {
        parts.push(format!("{} GPU", cores(request.gpu_milli)));
    }
    if request.memory_bytes > 0 {
        parts.push(bytes(request.memory_bytes));
    }
    let mut custom: Vec<String> = request
        .custom
        .iter()
        .map(|(name, quantity)| format!("{name}={quantity}"))
        .collect();
    custom.sort();
    parts.extend(custom);
    if !request.gpu_models.is_empty() {
        parts.push(format!("model {}", request.gpu_models.join("|")));
    }
    parts.join(", ")
}

/// Thousandths as a decimal count (`1500` → `1.5`).
pub(crate) fn cores(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        let text = format!("{:.3}", milli as f64 / 1000.0);
        text.trim_end_matches('0').to_string()
    }
}

/// Bytes in binary units.
pub(crate) fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(used: u64, total: u64) -> u64 {
    used.saturating_mul(100)
        .checked_div(total)
        .map_or(0, |percent| percent.min(100))
}

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS` UTC, or empty for 0.
pub(crate) fn time_text(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let seconds = unix_ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A Unix time in ms as `HH:MM:SS.mmm` UTC.
pub(crate) fn clock_text(unix_ms: u64) -> String {
    let of_day = unix_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day % 3_600_000 / 60_000,
        of_day % 60_000 / 1000,
        of_day % 1000
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Percent-encodes one URL path segment (ids are printable ASCII, but never trusted).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units_dates_and_paths() {
        assert_eq!(cores(1500), "1.5");
        assert_eq!(cores(2000), "2");
        assert_eq!(cores(250), "0.25");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(time_text(0), "");
        assert_eq!(time_text(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(time_text(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(clock_text(1_700_000_000_123), "22:13:20.123");
        assert_eq!(path_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
