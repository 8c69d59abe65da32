//! The dashboard's page and JSON handlers: each reads what it shows from the head (its status
//! view, an actor's or job's log, the reported pipelines, the metric history) and renders a
//! template or answers JSON. Reading a log that cannot be had (its node died, say) is shown as
//! a message on the page, never a server error. File reads (job logs) run on blocking threads.

use super::charts::charts;
use super::pipeline_view::PipelineView;
use super::views::{self, ClusterView};
use super::Dashboard;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use troupe_proto::{ActorInfo, ReadActorLogRequest};

/// How much of the end of a log a page shows.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

type Shared = State<Arc<Dashboard>>;

impl Dashboard {
    /// The cluster view (shared by all requests for up to a second; see `snapshot.rs`).
    async fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.views.get(&self.head).await
    }

    /// A cluster page: `template` over the cluster view.
    async fn cluster_page(&self, template: &str, page: &str) -> Response {
        match self.cluster_view().await {
            Some(view) => self.render_page(template, page, &*view),
            None => self.unavailable(),
        }
    }

    /// The answer when the status view could not be built (a bug, logged where it happened).
    fn unavailable(&self) -> Response {
        self.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Status unavailable",
            "The head could not build its status view; see the head's log.",
        )
    }

    fn pipeline_views(&self) -> Vec<PipelineView> {
        let now = Instant::now();
        self.head
            .pipelines
            .snapshot(now)
            .iter()
            .map(|record| PipelineView::of(record, now))
            .collect()
    }
}

pub(super) async fn overview(State(dashboard): Shared) -> Response {
    dashboard.cluster_page("overview.html", "overview").await
}

pub(super) async fn actors(State(dashboard): Shared) -> Response {
    dashboard.cluster_page("actors.html", "actors").await
}

pub(super) async fn groups(State(dashboard): Shared) -> Response {
    dashboard.cluster_page("groups.html", "groups").await
}

pub(super) async fn pending(State(dashboard): Shared) -> Response {
    dashboard.cluster_page("pending.html", "pending").await
}

pub(super) async fn jobs(State(dashboard): Shared) -> Response {
    let Some(shared) = dashboard.cluster_view().await else {
        return dashboard.unavailable();
    };
    let mut view = ClusterView::clone(&shared);
    // Each job's log size is a stat of its file: on a blocking thread, all at once.
    let head = dashboard.head.clone();
    let ids: Vec<String> = view.jobs.iter().map(|job| job.id.clone()).collect();
    let sizes = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| head.job_logs.len(id))
            .collect::<Vec<u64>>()
    })
    .await
    .unwrap_or_default();
    for (job, size) in view.jobs.iter_mut().zip(sizes) {
        job.log_bytes = size;
    }
    dashboard.render_page("jobs.html", "jobs", view)
}

pub(super) async fn pipelines(State(dashboard): Shared) -> Response {
    let pipelines = dashboard.pipeline_views();
    dashboard.render_page(
        "pipelines.html",
        "pipelines",
        minijinja::context! { pipelines => pipelines },
    )
}

pub(super) async fn metrics(State(dashboard): Shared) -> Response {
    let view = charts(
        &dashboard.history.snapshot(),
        crate::head::metric_history::unix_ms_now(),
    );
    dashboard.render_page("metrics.html", "metrics", view)
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    incarnation: Option<u64>,
}

/// One line of a log as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LineView {
    pub(crate) time: String,
    pub(crate) stream: &'static str,
    pub(crate) text: String,
}

/// An actor's log, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActorLogView {
    pub(crate) incarnation: u64,
    pub(crate) node_id: String,
    pub(crate) running: bool,
    pub(crate) lines: Vec<LineView>,
    /// Bytes of the log before the part shown.
    pub(crate) cut: String,
    pub(crate) error: String,
    pub(crate) incarnations: Vec<views::IncarnationView>,
}

impl Dashboard {
    fn actor_info(&self, id: &str) -> Option<ActorInfo> {
        self.head
            .read(|state| state.actors.get(id).map(|actor| actor.info.clone()))
    }

    async fn actor_log(&self, actor: &ActorInfo, incarnation: Option<u64>) -> ActorLogView {
        let request = ReadActorLogRequest {
            id: actor.id.clone(),
            incarnation: incarnation.unwrap_or(0),
            offset: LOG_TAIL_BYTES,
            from_end: true,
            max_bytes: LOG_TAIL_BYTES,
            ..ReadActorLogRequest::default()
        };
        match self.head.read_actor_log(request).await {
            Ok(reply) => {
                let chunk = reply.chunk.unwrap_or_default();
                let mut data: &[u8] = &chunk.data;
                if chunk.offset > 0 {
                    // The read began mid-line: start at the first whole one.
                    if let Some(end) = data.iter().position(|byte| *byte == b'\n') {
                        data = &data[end + 1..];
                    }
                }
                let (lines, _) = crate::logs::parse_records(data, true);
                ActorLogView {
                    incarnation: reply.incarnation,
                    node_id: reply.node_id,
                    running: reply.running,
                    lines: lines
                        .into_iter()
                        .map(|line| LineView {
                            time: if line.unix_ms == 0 {
                                String::new()
                            } else {
                                views::clock_text(line.unix_ms)
                            },
                            stream: match line.stream {
                                crate::logs::Stream::Stdout => "out",
                                crate::logs::Stream::Stderr => "err",
                            },
                            text: strip_ansi(&line.text),
                        })
                        .collect(),
                    cut: cut_text(chunk.offset),
                    error: String::new(),
                    incarnations: reply
                        .incarnations
                        .iter()
                        .map(views::incarnation_view)
                        .collect(),
                }
            }
            Err(status) => ActorLogView {
                incarnation: incarnation.unwrap_or(actor.incarnation),
                node_id: String::new(),
                running: false,
                lines: Vec::new(),
                cut: String::new(),
                error: format!("The log could not be read: {}", status.message().trim_end()),
                incarnations: actor.history.iter().map(views::incarnation_view).collect(),
            },
        }
    }
}

/// The text without terminal escape sequences (colors of `tracing` output, say), which a
/// browser would show as stray characters.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in @..~.
            for next in chars.by_ref() {
                if ('@'..='~').contains(&next) {
                    break;
                }
            }
        }
    }
    out
}

fn cut_text(offset: u64) -> String {
    if offset == 0 {
        String::new()
    } else {
        format!(
            "the first {} of the log are not shown",
            views::bytes(offset)
        )
    }
}

pub(super) async fn actor(
    State(dashboard): Shared,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some(info) = dashboard.actor_info(&id) else {
        return dashboard.error_page(
            StatusCode::NOT_FOUND,
            "No such actor",
            &format!(
                "The head knows no actor with id `{id}` (dead actors are forgotten after a while)."
            ),
        );
    };
    let log = dashboard.actor_log(&info, query.incarnation).await;
    let actor = views::actor_view(&info);
    dashboard.render_page(
        "actor.html",
        "actors",
        minijinja::context! { actor => actor, log => log },
    )
}

pub(super) async fn api_actor_log(
    State(dashboard): Shared,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
) -> Response {
    match dashboard.actor_info(&id) {
        Some(info) => Json(dashboard.actor_log(&info, query.incarnation).await).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no actor with id `{id}`")),
    }
}

/// A job's record and the end of its log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobLogView {
    pub(crate) job: views::JobView,
    pub(crate) lines: Vec<String>,
    pub(crate) cut: String,
    pub(crate) error: String,
}

impl Dashboard {
    /// A job's record and the end of its log (read on a blocking thread); `None` for no such
    /// job.
    async fn job_log(&self, id: &str) -> Option<JobLogView> {
        crate::rpc::check_submission_id(id).ok()?;
        let info = self
            .head
            .read(|state| state.jobs.get(id).map(|job| job.info.clone()))?;
        let head = self.head.clone();
        let read = tokio::task::spawn_blocking(move || job_log_of(&head, info)).await;
        match read {
            Ok(view) => Some(view),
            Err(err) => {
                tracing::error!(error = %err, "reading a job's log failed");
                None
            }
        }
    }
}

/// Reads the end of `info`'s log from the head's copy (blocking file I/O).
fn job_log_of(head: &crate::head::Head, mut info: troupe_proto::JobInfo) -> JobLogView {
    let logs = &head.job_logs;
    let id = info.submission_id.clone();
    info.log_bytes = logs.len(&id);
    let start = info.log_bytes.saturating_sub(LOG_TAIL_BYTES);
    let (lines, error) = match logs.read(&id, start, LOG_TAIL_BYTES as usize) {
        Ok(data) => {
            let mut data: &[u8] = &data;
            if start > 0 {
                if let Some(end) = data.iter().position(|byte| *byte == b'\n') {
                    data = &data[end + 1..];
                }
            }
            let text = String::from_utf8_lossy(data);
            (text.lines().map(strip_ansi).collect(), String::new())
        }
        Err(err) => (Vec::new(), format!("The log could not be read: {err}")),
    };
    JobLogView {
        job: views::job_view(&info),
        lines,
        cut: cut_text(start),
        error,
    }
}

pub(super) async fn job(State(dashboard): Shared, Path(id): Path<String>) -> Response {
    match dashboard.job_log(&id).await {
        Some(view) => dashboard.render_page("job.html", "jobs", view),
        None => dashboard.error_page(
            StatusCode::NOT_FOUND,
            "No such job",
            &format!("The head knows no job with submission id `{id}`."),
        ),
    }
}

pub(super) async fn api_job_log(State(dashboard): Shared, Path(id): Path<String>) -> Response {
    match dashboard.job_log(&id).await {
        Some(view) => Json(view).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("no job with submission id `{id}`"),
        ),
    }
}

pub(super) async fn api_status(State(dashboard): Shared) -> Response {
    match dashboard.cluster_view().await {
        Some(view) => Json(&*view).into_response(),
        None => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the head could not build its status view; see its log",
        ),
    }
}

pub(super) async fn api_pipelines(State(dashboard): Shared) -> Response {
    Json(dashboard.pipeline_views()).into_response()
}

/// One series of the metric history, as JSON.
#[derive(Serialize)]
struct SeriesJson {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    /// `[unix_ms, value]`, oldest first (non-finite values as null).
    points: Vec<(u64, Option<f64>)>,
}

pub(super) async fn api_metrics(State(dashboard): Shared) -> Response {
    let snapshot = dashboard.history.snapshot();
    let series: Vec<SeriesJson> = snapshot
        .series
        .into_iter()
        .map(|(key, points)| SeriesJson {
            name: key.name,
            labels: key.labels.into_iter().collect(),
            points: points
                .into_iter()
                .map(|(at, value)| (at, value.is_finite().then_some(value)))
                .collect(),
        })
        .collect();
    Json(serde_json::json!({
        "period_s": crate::head::metric_history::SAMPLE_PERIOD.as_secs(),
        "series": series,
    }))
    .into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
