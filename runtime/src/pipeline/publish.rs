//! What a pipeline tells others about its steps: each stage and weight sync as a timeline span
//! on the driver (`crate::timeline`), and each step's report to the head (`ReportPipeline`),
//! which the dashboard draws and which carries the spans recorded since the last report (so
//! that `troupe timeline`, run anywhere, has the stages too). Reporting is best effort: it runs in the background with a
//! deadline and never slows or fails a step.

use super::graph::Pipeline;
use super::run::StepReport;
use crate::timeline::{Recorded, SpanKind, StepTag};
use std::sync::Arc;
use std::time::Duration;
use troupe_proto::{PipelineReport, PipelineStageInfo, PipelineStageTime, PipelineStepInfo};

/// How long a report to the head may take.
const REPORT_DEADLINE: Duration = Duration::from_secs(5);

/// A finished stage or sync, as the driver saw it.
pub(crate) struct DriverSpan<'a> {
    pub kind: SpanKind,
    pub name: &'a str,
    pub group: &'a str,
    pub start_unix_us: u64,
    pub duration: Duration,
    pub tag: StepTag,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub failed: bool,
}

/// Spans held for the next report at most (the oldest go first).
const UNSENT_SPANS_KEPT: usize = 1024;

impl Pipeline {
    /// Records a stage or sync span in this process's timeline, and keeps it for the head.
    pub(crate) fn record_span(&self, span: DriverSpan<'_>) {
        let recorder = crate::timeline::recorder();
        if !recorder.enabled() {
            return;
        }
        let recorded = Recorded {
            kind: span.kind,
            name: Arc::from(span.name),
            start_unix_us: span.start_unix_us,
            duration_us: span.duration.as_micros() as u64,
            tag: span.tag,
            bytes_in: span.bytes_in,
            bytes_out: span.bytes_out,
            caller: Arc::from(
                crate::client::current()
                    .map(|client| client.session_id.clone())
                    .unwrap_or_else(|| "driver".to_string()),
            ),
            failed: span.failed,
            group: Some(Arc::from(span.group)),
        };
        if let Ok(mut unsent) = self.unsent_spans.lock() {
            if unsent.len() >= UNSENT_SPANS_KEPT {
                unsent.remove(0);
            }
            unsent.extend(crate::timeline::to_wire(
                vec![recorded.clone()],
                "",
                0,
                "driver",
            ));
        }
        recorder.record(recorded);
    }

    fn take_unsent_spans(&self) -> Vec<troupe_proto::Span> {
        self.unsent_spans
            .lock()
            .map(|mut unsent| std::mem::take(&mut *unsent))
            .unwrap_or_default()
    }

    /// Sends the step's report to the head in the background (when this process has a cluster).
    pub(crate) fn publish(&self, report: &StepReport) {
        let Some(client) = crate::client::current() else {
            return;
        };
        let message = self.report_message(&client.session_id, report);
        if let Ok(mut last) = self.last_report.lock() {
            *last = Some(message.clone());
        }
        let mut message = message;
        message.spans = self.take_unsent_spans();
        send(&client, message);
    }

    /// After a separate `sync_weights`: the latest step's report again, with the version the
    /// generators now serve (the head replaces the step).
    pub(crate) fn publish_sync(&self, synced: &super::SyncOutcome) {
        let Some(client) = crate::client::current() else {
            return;
        };
        let message = self.last_report.lock().ok().and_then(|mut last| {
            let message = last.as_mut()?;
            let step = message.step.as_mut()?;
            if step.synced_version == 0 {
                step.synced_version = synced.version;
                step.sync_ms = synced.milliseconds;
            }
            Some(message.clone())
        });
        // Sent again with the sync span (the head keeps a known sync and replaces the rest).
        if let Some(mut message) = message {
            message.spans = self.take_unsent_spans();
            send(&client, message);
        }
    }
}

/// Sends a report in the background, with a deadline.
fn send(client: &crate::client::Client, message: PipelineReport) {
    {
        let mut cluster = client.cluster.clone();
        tokio::spawn(async move {
            let sent =
                tokio::time::timeout(REPORT_DEADLINE, cluster.report_pipeline(message)).await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!("the head did not take a pipeline report");
            }
        });
    }
}

impl Pipeline {
    fn report_message(&self, session: &str, report: &StepReport) -> PipelineReport {
        let stages = self
            .stages
            .iter()
            .map(|stage| PipelineStageInfo {
                name: stage.name.clone(),
                group: stage.group.clone(),
                members: self.groups.get(&stage.group).copied().unwrap_or(1) as u32,
                inputs: stage.inputs.clone(),
                outputs: stage.outputs.clone(),
                dispatch: format!("{:?}", stage.dispatch),
            })
            .collect();
        let (learning_group, generating_group) = match &self.weight_sync {
            Some(edge) => (
                edge.learning_group().to_string(),
                edge.generating_group().to_string(),
            ),
            None => (String::new(), String::new()),
        };
        let step = PipelineStepInfo {
            step: report.step as u64,
            weight_version: report.weight_version,
            synced_version: report.weight_sync.as_ref().map_or(0, |sync| sync.version),
            rows: report.rows as u64,
            stages: report
                .timings
                .iter()
                .map(|timing| PipelineStageTime {
                    stage: timing.stage.clone(),
                    seconds: timing.seconds,
                    member_seconds: timing.member_seconds,
                    fetch_seconds: timing.fetch_seconds,
                    rows: timing.rows as u64,
                    rows_per_s: timing.rows_per_s,
                })
                .collect(),
            stage_bytes: report.stage_bytes,
            finished_unix_ms: crate::logs::unix_ms_now(),
            sync_ms: report
                .weight_sync
                .as_ref()
                .map_or(0.0, |sync| sync.milliseconds),
        };
        PipelineReport {
            pipeline_id: format!("{session}-{}", self.id),
            session: session.to_string(),
            stages,
            learning_group,
            generating_group,
            step: Some(step),
            spans: Vec::new(),
        }
    }
}
