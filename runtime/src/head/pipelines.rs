//! The pipelines drivers report (`Cluster.ReportPipeline`), kept in the head's memory for the
//! dashboard: per pipeline its latest graph, its sync edge's groups and a ring of its latest
//! steps. Nothing here is written to disk; a pipeline not reported for `STALE_AFTER` is dropped,
//! and at most `MAX_PIPELINES` are kept (a new one pushes out the one reported longest ago).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use troupe_proto::{PipelineReport, PipelineStageInfo, PipelineStepInfo};

/// Steps kept per pipeline.
pub(crate) const STEPS_KEPT: usize = 120;
/// A pipeline silent this long is forgotten.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(600);
/// Pipelines kept at once.
pub(crate) const MAX_PIPELINES: usize = 64;

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

/// Every pipeline reported and not yet stale.
#[derive(Default)]
pub(crate) struct Pipelines {
    records: Mutex<HashMap<String, PipelineRecord>>,
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
            if let Some(same) = record.steps.iter_mut().find(|held| held.step == step.step) {
                // A repeat completes the step (its sync); reports may arrive out of order, so a
                // known sync is never taken back.
                let (synced, sync_ms) = (same.synced_version, same.sync_ms);
                *same = step;
                if same.synced_version == 0 {
                    same.synced_version = synced;
                    same.sync_ms = sync_ms;
                }
            } else {
                record.steps.push_back(step);
                while record.steps.len() > STEPS_KEPT {
                    record.steps.pop_front();
                }
            }
        }
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
}
