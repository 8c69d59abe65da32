//! The head's autoscaler loop: every period it ties registered node agents to their launches
//! (label `troupe.io/launch-id`), asks the planner what to launch and drain, has the provider
//! start and stop node agents, retries failed or silent launches with backoff, and keeps what
//! `troupe status` and the metrics show: each node's phase and why, the latest decisions, why
//! waiting work launches nothing, and counters. A provider failure never stops the head. This
//! file owns the records and what status shows; `round.rs` is one round of the loop.

mod round;

use super::Head;
use crate::autoscaler::command::CommandProvider;
use crate::autoscaler::config::{AutoscalerConfig, ProviderConfig};
use crate::autoscaler::local::LocalProvider;
use crate::autoscaler::provider::NodeProvider;
use crate::autoscaler::Planner;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use troupe_proto::{AutoscaledNode, AutoscalerStatus};

/// Decisions kept for status.
const DECISIONS_KEPT: usize = 50;
/// How often the provider's list is compared with the book.
const LIST_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// The provider's create call is under way.
    Requested,
    /// Created; waiting for the agent to register.
    Launching,
    /// A try failed; the next starts at `until`.
    BackingOff {
        until: Instant,
    },
    /// Every try failed; the capacity rests until `until`, then is planned again.
    Failed {
        until: Instant,
    },
    Running,
    Draining,
    /// The provider's delete call is under way.
    Stopping,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Requested => "requested",
            Phase::Launching => "launching",
            Phase::BackingOff { .. } => "backing-off",
            Phase::Failed { .. } => "failed",
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
        }
    }
}

#[derive(Debug, Clone)]
struct LaunchRecord {
    node_type: String,
    phase: Phase,
    since: Instant,
    attempts: u32,
    reason: String,
    node_id: Option<String>,
    idle_since: Option<Instant>,
    /// Found at the provider rather than launched by this head: if it never registers it is
    /// stopped, not launched again.
    adopted: bool,
}

/// A stop still to be made.
#[derive(Debug, Clone)]
struct Reap {
    tries: u32,
    next_at: Instant,
    last_error: String,
}

impl Reap {
    fn new() -> Self {
        Reap {
            tries: 0,
            next_at: Instant::now(),
            last_error: String::new(),
        }
    }
}

#[derive(Default)]
struct Book {
    launches: BTreeMap<String, LaunchRecord>,
    decisions: VecDeque<String>,
    waiting: Vec<String>,
    launched: u64,
    terminated: u64,
    failures: u64,
    /// Launches to stop at the provider (failed tries, stopped nodes whose stop failed), asked
    /// again with backoff until the provider says they are gone or the tries run out.
    reap: BTreeMap<String, Reap>,
    /// Those whose stop is under way.
    reaping: BTreeSet<String>,
    /// When the provider's list was last compared with the book.
    listed_at: Option<Instant>,
    /// Launches whose stop the provider confirmed, and when (a list may still show them).
    recently_stopped: BTreeMap<String, Instant>,
}

impl Book {
    fn decide(&mut self, text: String) {
        tracing::info!(decision = %text, "autoscaler");
        let stamp = humantime_now();
        self.decisions.push_back(format!("{stamp} {text}"));
        while self.decisions.len() > DECISIONS_KEPT {
            self.decisions.pop_front();
        }
    }
}

fn humantime_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let secs = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The autoscaler of one head.
pub(crate) struct Autoscaler {
    config: AutoscalerConfig,
    planner: Planner,
    provider: Arc<dyn NodeProvider>,
    token_file: PathBuf,
    book: Mutex<Book>,
}

impl Autoscaler {
    /// Checks what only the head can check and builds the provider.
    pub fn new(
        config: AutoscalerConfig,
        data_dir: &std::path::Path,
        troupe_binary: Option<PathBuf>,
        external: Option<crate::autoscaler::provider::ExternalProvider>,
    ) -> Result<Self> {
        let invalid = |why: String| Error::Invalid {
            what: "autoscaler config".to_string(),
            why,
        };
        if config.consolidation.is_some() {
            return Err(invalid(
                "`consolidation` is only simulated (`troupe sim autoscale`); the head does not yet move running actors off a node".to_string(),
            ));
        }
        let provider: Arc<dyn NodeProvider> = match (&config.provider, external) {
            (_, Some(external)) => external.0,
            (ProviderConfig::Local { log_dir }, None) => {
                let binary = match troupe_binary {
                    Some(binary) => binary,
                    None => std::env::current_exe().map_err(|e| invalid(format!("cannot find the troupe executable for the local provider: {e}")))?,
                };
                let log_dir = log_dir.clone().unwrap_or_else(|| data_dir.join("autoscaled-nodes"));
                Arc::new(LocalProvider::new(binary, log_dir))
            }
            (ProviderConfig::Command { create, delete, list, timeout_s }, None) => Arc::new(CommandProvider {
                create: create.clone(),
                delete: delete.clone(),
                list: list.clone(),
                timeout: Duration::from_secs_f64(*timeout_s),
            }),
            (ProviderConfig::Kubernetes { .. }, None) => {
                return Err(invalid(
                    "the kubernetes provider lives in crate troupe-kubernetes: pass it as HeadConfig::provider (the `troupe` command does)".to_string(),
                ))
            }
        };
        Ok(Self {
            planner: Planner::new(&config),
            config,
            provider,
            token_file: data_dir.join(crate::rpc::auth::TOKEN_FILE_NAME),
            book: Mutex::new(Book::default()),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        match self.book.lock() {
            Ok(book) => book,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64(
            (self.config.backoff_initial_s * factor).min(self.config.backoff_max_s),
        )
    }

    /// What `troupe status` shows.
    pub fn status(&self) -> AutoscalerStatus {
        let book = self.book();
        let now = Instant::now();
        AutoscalerStatus {
            provider: self.provider.kind().to_string(),
            nodes: book
                .launches
                .iter()
                .map(|(id, record)| AutoscaledNode {
                    launch_id: id.clone(),
                    node_type: record.node_type.clone(),
                    phase: if record.phase == Phase::Running && record.idle_since.is_some() {
                        "idle".to_string()
                    } else {
                        record.phase.name().to_string()
                    },
                    node_id: record.node_id.clone().unwrap_or_default(),
                    for_s: now
                        .duration_since(
                            record
                                .idle_since
                                .filter(|_| record.phase == Phase::Running)
                                .unwrap_or(record.since),
                        )
                        .as_secs_f64(),
                    reason: record.reason.clone(),
                    attempts: record.attempts,
                })
                .chain(
                    book.reap
                        .iter()
                        .filter(|(id, _)| !book.launches.contains_key(*id))
                        .map(|(id, reap)| AutoscaledNode {
                            launch_id: id.clone(),
                            node_type: type_of_launch(id),
                            phase: "stopping".to_string(),
                            reason: if reap.last_error.is_empty() {
                                "asked the provider to stop it".to_string()
                            } else {
                                format!("stop failed, asking again: {}", reap.last_error)
                            },
                            attempts: reap.tries,
                            ..AutoscaledNode::default()
                        }),
                )
                .collect(),
            decisions: book.decisions.iter().cloned().collect(),
            waiting: book.waiting.clone(),
            launches: book.launched,
            terminations: book.terminated,
            launch_failures: book.failures,
        }
    }

    /// Prometheus lines.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let book = self.book();
        for (name, help, value) in [
            (
                "troupe_autoscaler_launches_total",
                "Node launches the autoscaler asked for.",
                book.launched,
            ),
            (
                "troupe_autoscaler_terminations_total",
                "Nodes the autoscaler drained and stopped.",
                book.terminated,
            ),
            (
                "troupe_autoscaler_launch_failures_total",
                "Launch tries that failed or never registered.",
                book.failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let mut by_phase: BTreeMap<&str, u64> = BTreeMap::new();
        for record in book.launches.values() {
            *by_phase.entry(record.phase.name()).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP troupe_autoscaler_nodes Autoscaled nodes by phase."
        );
        let _ = writeln!(out, "# TYPE troupe_autoscaler_nodes gauge");
        for (phase, count) in by_phase {
            let _ = writeln!(out, "troupe_autoscaler_nodes{{phase=\"{phase}\"}} {count}");
        }
    }
}

/// The loop; runs until the head stops.
pub(super) async fn run(head: Arc<Head>, autoscaler: Arc<Autoscaler>, head_address: String) {
    round::reconcile(&head, &autoscaler).await;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(autoscaler.config.period_s));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A round that panics (a bug, or a library's) is reported and the next one runs: the
        // autoscaler must not stop silently while the head goes on.
        let (this_head, this_autoscaler, address) =
            (head.clone(), autoscaler.clone(), head_address.clone());
        let outcome =
            tokio::spawn(async move { round::round(&this_head, &this_autoscaler, &address).await })
                .await;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "an autoscaler round failed; the next one runs as usual");
            autoscaler.book().decide(format!("a round failed: {e}"));
        }
    }
}

/// The node type in a launch id (`TYPE-xxxxxxxx`).
fn type_of_launch(id: &str) -> String {
    id.rsplit_once('-')
        .map_or(id.to_string(), |(t, _)| t.to_string())
}
