//! The pipelines drivers report (`Cluster.ReportPipeline`), kept in the head's memory for the
//! dashboard: per pipeline its latest graph, its sync edge's groups and a ring of its latest
//! steps, in step order; and the stage and weight-sync spans drivers send with their reports, for
//! `troupe timeline` (the latest `DRIVER_SPANS_KEPT`). Nothing here is written to disk; a pipeline not reported for `STALE_AFTER` is dropped,
//! and at most `MAX_PIPELINES` are kept (a new one pushes out the one reported longest ago).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use troupe_proto::{PipelineReport, PipelineStageInfo, PipelineStepInfo, Span};

/// Steps kept per pipeline.
pub(crate) const STEPS_KEPT: usize = 120;
/// A pipeline silent this long is forgotten.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(600);
/// Pipelines kept at once.
pub(crate) const MAX_PIPELINES: usize = 64;
/// Driver spans kept (the latest), over all pipelines.
pub(crate) const DRIVER_SPANS_KEPT: usize = 50_000;

/// One reported pipeline.
#[derive(Debug, Clone)]
pub(crate) struct PipelineRecord {
    pub(crate) pipeline_id: String,
    pub(crate) session: String,
    pub(crate) stages: Vec<PipelineStageInfo>,
    pub(crate) learning_group: String,
    pub(crate) generating_group: String,
    /// Oldest first.
    pub(crate) steps: VecDeque<PipelineStepInfo>,
    pub(crate) last_report: Instant,
}

/// Every pipeline reported and not yet stale, and the stage and sync spans drivers sent.
#[derive(Default)]
pub(crate) struct Pipelines {
    records: Mutex<HashMap<String, PipelineRecord>>,
    spans: Mutex<VecDeque<Span>>,
}

/// Puts a step in step order. A repeat of the same report (same finish time) completes the
/// step (its sync), and a known sync is never taken back. A step that finished after the newest
/// held one but has a number already held or below it was run again (a run resumed from a
/// checkpoint): the held steps from its number on are dropped, they are being redone. Otherwise
/// a report that arrives late goes in its place, and a late report of an earlier run of a step
/// is ignored.
fn insert_step(steps: &mut VecDeque<PipelineStepInfo>, step: PipelineStepInfo) {
    let newest_finish = steps.iter().map(|held| held.finished_unix_ms).max();
    if let Some(same) = steps.iter_mut().find(|held| held.step == step.step) {
        if same.finished_unix_ms == step.finished_unix_ms {
            let (synced, sync_ms) = (same.synced_version, same.sync_ms);
            *same = step;
            if same.synced_version == 0 {
                same.synced_version = synced;
                same.sync_ms = sync_ms;
            }
            return;
        }
        if step.finished_unix_ms < same.finished_unix_ms {
            return;
        }
    }
    let newest_step = steps.back().map(|held| held.step);
    let redone = newest_step.is_some_and(|newest| step.step <= newest)
        && newest_finish.is_some_and(|finish| step.finished_unix_ms > finish);
    if redone {
        steps.retain(|held| held.step < step.step);
    }
    let at = steps
        .iter()
        .position(|held| held.step > step.step)
        .unwrap_or(steps.len());
    steps.insert(at, step);
    while steps.len() > STEPS_KEPT {
        steps.pop_front();
    }
}

impl Pipelines {
    /// Takes a report (already validated): the graph replaces the one held, and the step (if
    /// any) joins the ring, replacing a step of the same number.
    pub(crate) fn report(&self, report: PipelineReport, now: Instant) {
        let mut records = self.lock();
        prune(&mut records, now);
        if !records.contains_key(&report.pipeline_id) && records.len() >= MAX_PIPELINES {
            let oldest = records
                .values()
                .min_by_key(|record| record.last_report)
                .map(|record| record.pipeline_id.clone());
            if let Some(oldest) = oldest {
                records.remove(&oldest);
            }
        }
        let record = records
            .entry(report.pipeline_id.clone())
            .or_insert_with(|| PipelineRecord {
                pipeline_id: report.pipeline_id.clone(),
                session: String::new(),
                stages: Vec::new(),
                learning_group: String::new(),
                generating_group: String::new(),
                steps: VecDeque::new(),
                last_report: now,
            });
        record.session = report.session;
        if !report.stages.is_empty() {
            record.stages = report.stages;
        }
        record.learning_group = report.learning_group;
        record.generating_group = report.generating_group;
        record.last_report = now;
        if let Some(step) = report.step {
            insert_step(&mut record.steps, step);
        }
        drop(records);
        if !report.spans.is_empty() {
            let mut spans = self
                .spans
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for span in report.spans {
                if spans.len() >= DRIVER_SPANS_KEPT {
                    spans.pop_front();
                }
                spans.push_back(span);
            }
        }
    }

    /// The drivers' spans that overlap `[since, until]` (microseconds since the Unix epoch; 0:
    /// unbounded), oldest first.
    pub(crate) fn spans_between(&self, since_unix_us: u64, until_unix_us: u64) -> Vec<Span> {
        let spans = self
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        spans
            .iter()
            .filter(|span| {
                crate::timeline::overlaps(
                    span.start_unix_us,
                    span.duration_us,
                    since_unix_us,
                    until_unix_us,
                )
            })
            .cloned()
            .collect()
    }

    /// The pipelines held, by id, after dropping stale ones.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<PipelineRecord> {
        let mut records = self.lock();
        prune(&mut records, now);
        let mut list: Vec<PipelineRecord> = records.values().cloned().collect();
        list.sort_by(|a, b| a.pipeline_id.cmp(&b.pipeline_id));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PipelineRecord>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn prune(records: &mut HashMap<String, PipelineRecord>, now: Instant) {
    records.retain(|_, record| now.saturating_duration_since(record.last_report) < STALE_AFTER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, step: Option<u64>) -> PipelineReport {
        PipelineReport {
            pipeline_id: id.to_string(),
            session: "s".to_string(),
            stages: vec![PipelineStageInfo {
                name: "generate".to_string(),
                ..PipelineStageInfo::default()
            }],
            step: step.map(|step| PipelineStepInfo {
                step,
                ..PipelineStepInfo::default()
            }),
            ..PipelineReport::default()
        }
    }

    #[test]
    fn keeps_the_latest_steps_and_replaces_a_repeated_one() {
        let pipelines = Pipelines::default();
        let now = Instant::now();
        for step in 0..(STEPS_KEPT as u64 + 30) {
            pipelines.report(report("p", Some(step)), now);
        }
        let mut repeated = report("p", Some(STEPS_KEPT as u64 + 29));
        if let Some(step) = repeated.step.as_mut() {
            step.rows = 7;
        }
        pipelines.report(repeated, now);
        let held = pipelines.snapshot(now);
        assert_eq!(held.len(), 1);
        let steps = &held[0].steps;
        assert_eq!(steps.len(), STEPS_KEPT);
        assert_eq!(steps.front().map(|s| s.step), Some(30));
        assert_eq!(steps.back().map(|s| (s.step, s.rows)), Some((149, 7)));
    }

    #[test]
    fn drops_stale_pipelines_and_bounds_their_number() {
        let pipelines = Pipelines::default();
        let start = Instant::now();
        pipelines.report(report("old", None), start);
        let later = start + STALE_AFTER + Duration::from_secs(1);
        pipelines.report(report("new", None), later);
        let ids: Vec<_> = pipelines
            .snapshot(later)
            .into_iter()
            .map(|p| p.pipeline_id)
            .collect();
        assert_eq!(ids, ["new"]);
        for index in 0..MAX_PIPELINES + 5 {
            let at = later + Duration::from_millis(index as u64 + 1);
            pipelines.report(report(&format!("p{index}"), None), at);
        }
        let held = pipelines.snapshot(later + Duration::from_secs(1));
        assert_eq!(held.len(), MAX_PIPELINES);
        assert!(!held.iter().any(|p| p.pipeline_id == "new"));
        assert!(
            !held.iter().any(|p| p.pipeline_id == "p4"),
            "the oldest go first"
        );
        assert!(held.iter().any(|p| p.pipeline_id == "p5"));
    }

    #[test]
    fn steps_stay_in_order_syncs_are_kept_and_driver_spans_are_ranged() {
        let step = |n: u64, synced: u64| PipelineStepInfo {
            step: n,
            synced_version: synced,
            finished_unix_ms: 1_000 + n,
            ..PipelineStepInfo::default()
        };
        let mut steps = VecDeque::new();
        for n in 0..5 {
            insert_step(&mut steps, step(n, n + 1));
        }
        // A late report of step 4 without its sync keeps the sync already known.
        insert_step(&mut steps, step(4, 0));
        assert_eq!(
            steps.back().map(|s| (s.step, s.synced_version)),
            Some((4, 5))
        );
        // A report that arrives late goes in its place.
        let mut late = VecDeque::new();
        insert_step(&mut late, step(1, 0));
        insert_step(&mut late, step(0, 0));
        let order: Vec<u64> = late.iter().map(|s| s.step).collect();
        assert_eq!(order, vec![0, 1]);
        // A run resumed from step 2 redoes 2..: the held 2, 3 and 4 go.
        let mut redone = step(2, 0);
        redone.finished_unix_ms = 9_999;
        insert_step(&mut steps, redone);
        let held: Vec<u64> = steps.iter().map(|s| s.step).collect();
        assert_eq!(held, vec![0, 1, 2]);

        let pipelines = Pipelines::default();
        let span = |start: u64| Span {
            kind: "stage".into(),
            name: "generate".into(),
            start_unix_us: start,
            duration_us: 10,
            ..Span::default()
        };
        let mut with_spans = report("p", Some(0));
        with_spans.spans = (0..DRIVER_SPANS_KEPT as u64 + 5)
            .map(|i| span(i * 100))
            .collect();
        pipelines.report(with_spans, Instant::now());
        let all = pipelines.spans_between(0, 0);
        assert_eq!(all.len(), DRIVER_SPANS_KEPT, "the latest are kept");
        assert_eq!(all[0].start_unix_us, 500);
        let some = pipelines.spans_between(1_005, 1_200);
        let starts: Vec<u64> = some.iter().map(|s| s.start_unix_us).collect();
        assert_eq!(starts, vec![1_000, 1_100, 1_200]);
    }
}
