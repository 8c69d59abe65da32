//! The dashboard's page and JSON handlers: each reads what it shows from the head (its status
//! view, an actor's or job's log, the reported pipelines, the metric history) and renders a
//! template or answers JSON. Reading a log that cannot be had (its node died, say) is shown as
//! a message on the page, never a server error.

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
use troupe_proto::{ActorInfo, ClusterStatusReply, ReadActorLogRequest};

/// How much of the end of a log a page shows.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

type Shared = State<Arc<Dashboard>>;

impl Dashboard {
    fn status(&self) -> ClusterStatusReply {
        let mut status = self.head.inspect(crate::head::metrics::status_of);
        status.autoscaler = self.head.autoscaler.as_ref().map(|a| a.status());
        status
    }

    fn cluster_view(&self) -> ClusterView {
        ClusterView::of(&self.status())
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
    let view = dashboard.cluster_view();
    dashboard.render_page("overview.html", "overview", view)
}

pub(super) async fn actors(State(dashboard): Shared) -> Response {
    let view = dashboard.cluster_view();
    dashboard.render_page("actors.html", "actors", view)
}

pub(super) async fn groups(State(dashboard): Shared) -> Response {
    let view = dashboard.cluster_view();
    dashboard.render_page("groups.html", "groups", view)
}

pub(super) async fn pending(State(dashboard): Shared) -> Response {
    let view = dashboard.cluster_view();
    dashboard.render_page("pending.html", "pending", view)
}

pub(super) async fn jobs(State(dashboard): Shared) -> Response {
    let mut view = dashboard.cluster_view();
    for job in &mut view.jobs {
        job.log_bytes = dashboard.head.job_logs.len(&job.id);
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
    fn job_log(&self, id: &str) -> Option<JobLogView> {
        crate::rpc::check_submission_id(id).ok()?;
        let mut info = self
            .head
            .read(|state| state.jobs.get(id).map(|job| job.info.clone()))?;
        let logs = &self.head.job_logs;
        info.log_bytes = logs.len(id);
        let start = info.log_bytes.saturating_sub(LOG_TAIL_BYTES);
        let (lines, error) = match logs.read(id, start, LOG_TAIL_BYTES as usize) {
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
        Some(JobLogView {
            job: views::job_view(&info),
            lines,
            cut: cut_text(start),
            error,
        })
    }
}

pub(super) async fn job(State(dashboard): Shared, Path(id): Path<String>) -> Response {
    match dashboard.job_log(&id) {
        Some(view) => dashboard.render_page("job.html", "jobs", view),
        None => dashboard.error_page(
            StatusCode::NOT_FOUND,
            "No such job",
            &format!("The head knows no job with submission id `{id}`."),
        ),
    }
}

pub(super) async fn api_job_log(State(dashboard): Shared, Path(id): Path<String>) -> Response {
    match dashboard.job_log(&id) {
        Some(view) => Json(view).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            &format!("no job with submission id `{id}`"),
        ),
    }
}

pub(super) async fn api_status(State(dashboard): Shared) -> Response {
    Json(dashboard.cluster_view()).into_response()
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
