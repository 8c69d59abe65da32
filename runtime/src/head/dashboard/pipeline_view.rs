//! The pipelines page's records: each reported pipeline's graph laid out for an inline SVG
//! (stages in columns by dependency depth, an edge per producer → consumer with the columns it
//! carries, the weight-sync edge dashed) and its recent steps with per-stage times, throughput
//! and weight-version staleness. Only coordinates and plain text are made here; the template
//! escapes the text.

use crate::head::pipelines::PipelineRecord;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;
use troupe_proto::PipelineStepInfo;

const BOX_WIDTH: u32 = 190;
const BOX_HEIGHT: u32 = 74;
const COLUMN_GAP: u32 = 70;
const ROW_GAP: u32 = 26;
const MARGIN: u32 = 20;
/// Longest name drawn in a box (the whole name is in its tooltip).
const DRAWN_NAME: usize = 24;
/// Steps listed in the page's table (the JSON has all held).
const STEPS_SHOWN: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StageBox {
    pub(crate) name: String,
    pub(crate) drawn_name: String,
    pub(crate) detail: String,
    /// The latest step's time (`0.123 s`) and throughput (`512 rows/s`), if reported.
    pub(crate) seconds: String,
    pub(crate) rows_per_s: String,
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) source: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Edge {
    pub(crate) path: String,
    pub(crate) label: String,
    pub(crate) label_x: u32,
    pub(crate) label_y: u32,
    pub(crate) sync: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepRow {
    pub(crate) step: u64,
    pub(crate) finished: String,
    pub(crate) rows: u64,
    pub(crate) weight_version: u64,
    pub(crate) synced_version: String,
    pub(crate) staleness: String,
    pub(crate) sync_ms: String,
    pub(crate) stage_bytes: String,
    /// Per stage, in the order of `PipelineView::stage_names`: `seconds (rows/s)` or empty.
    pub(crate) stages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PipelineView {
    pub(crate) id: String,
    pub(crate) session: String,
    pub(crate) reported: String,
    pub(crate) learning_group: String,
    pub(crate) generating_group: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) boxes: Vec<StageBox>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) stage_names: Vec<String>,
    pub(crate) steps: Vec<StepRow>,
    pub(crate) steps_held: usize,
}

impl PipelineView {
    pub(crate) fn of(record: &PipelineRecord, now: Instant) -> PipelineView {
        let stages = &record.stages;
        let latest: HashMap<&str, (f64, f64)> = record
            .steps
            .back()
            .map(|step| {
                step.stages
                    .iter()
                    .map(|time| (time.stage.as_str(), (time.seconds, time.rows_per_s)))
                    .collect()
            })
            .unwrap_or_default();
        // A stage's depth: one past the deepest earlier stage that makes one of its inputs;
        // inputs no stage makes come from the source, drawn at depth 0.
        let mut producer: HashMap<&str, usize> = HashMap::new();
        let mut depth = vec![0_u32; stages.len()];
        let mut source_columns: Vec<&str> = Vec::new();
        let mut links: Vec<(Option<usize>, usize, Vec<&str>)> = Vec::new();
        for (index, stage) in stages.iter().enumerate() {
            let mut from: Vec<(Option<usize>, &str)> = Vec::new();
            for input in &stage.inputs {
                match producer.get(input.as_str()) {
                    Some(&made_by) => from.push((Some(made_by), input)),
                    None => {
                        if !source_columns.contains(&input.as_str()) {
                            source_columns.push(input);
                        }
                        from.push((None, input));
                    }
                }
            }
            depth[index] = 1 + from
                .iter()
                .filter_map(|(made_by, _)| made_by.map(|i| depth[i]))
                .max()
                .unwrap_or(0);
            let mut grouped: Vec<(Option<usize>, Vec<&str>)> = Vec::new();
            for (made_by, column) in from {
                match grouped.iter_mut().find(|(by, _)| *by == made_by) {
                    Some((_, columns)) => columns.push(column),
                    None => grouped.push((made_by, vec![column])),
                }
            }
            links.extend(
                grouped
                    .into_iter()
                    .map(|(by, columns)| (by, index, columns)),
            );
            for output in &stage.outputs {
                producer.insert(output, index);
            }
        }
        let has_source = !source_columns.is_empty();
        let shift = u32::from(!has_source);
        let mut rows_at_depth: HashMap<u32, u32> = HashMap::new();
        let mut place = |depth: u32| {
            let row = rows_at_depth.entry(depth).or_insert(0);
            let at = (
                MARGIN + depth * (BOX_WIDTH + COLUMN_GAP),
                MARGIN + *row * (BOX_HEIGHT + ROW_GAP),
            );
            *row += 1;
            at
        };
        let source_at = has_source.then(|| place(0));
        let mut boxes = Vec::new();
        if let Some((x, y)) = source_at {
            boxes.push(StageBox {
                name: "source".to_string(),
                drawn_name: "source".to_string(),
                detail: source_columns.join(", "),
                seconds: String::new(),
                rows_per_s: String::new(),
                x,
                y,
                source: true,
            });
        }
        let mut positions = Vec::with_capacity(stages.len());
        for (index, stage) in stages.iter().enumerate() {
            let (x, y) = place(depth[index] - shift);
            positions.push((x, y));
            let (seconds, rows_per_s) = match latest.get(stage.name.as_str()) {
                Some((seconds, rate)) => (format!("{seconds:.3} s"), format!("{rate:.0} rows/s")),
                None => (String::new(), String::new()),
            };
            boxes.push(StageBox {
                name: stage.name.clone(),
                drawn_name: shorten(&stage.name),
                detail: shorten(&format!(
                    "{} ×{} · {}",
                    stage.group, stage.members, stage.dispatch
                )),
                seconds,
                rows_per_s,
                x,
                y,
                source: false,
            });
        }
        let mut edges = Vec::new();
        for (from, to, columns) in links {
            let start = match from {
                Some(index) => positions[index],
                None => match source_at {
                    Some(at) => at,
                    None => continue,
                },
            };
            edges.push(forward_edge(
                start,
                positions[to],
                shorten(&columns.join(", ")),
            ));
        }
        if !record.learning_group.is_empty() && !record.generating_group.is_empty() {
            let learners = stages
                .iter()
                .position(|stage| stage.group == record.learning_group);
            let generators = stages
                .iter()
                .position(|stage| stage.group == record.generating_group);
            if let (Some(learner), Some(generator)) = (learners, generators) {
                edges.push(sync_edge(positions[learner], positions[generator]));
            }
        }
        let width = boxes.iter().map(|b| b.x + BOX_WIDTH).max().unwrap_or(0) + MARGIN;
        let height = boxes.iter().map(|b| b.y + BOX_HEIGHT).max().unwrap_or(0) + MARGIN + 50;
        let stage_names: Vec<String> = stages.iter().map(|stage| stage.name.clone()).collect();
        PipelineView {
            id: record.pipeline_id.clone(),
            session: record.session.clone(),
            reported: format!(
                "{:.1} s ago",
                now.saturating_duration_since(record.last_report)
                    .as_secs_f64()
            ),
            learning_group: record.learning_group.clone(),
            generating_group: record.generating_group.clone(),
            width,
            height,
            boxes,
            edges,
            steps: step_rows(record, &stage_names),
            stage_names,
            steps_held: record.steps.len(),
        }
    }
}

/// The newest `STEPS_SHOWN` steps, newest first. Staleness of a step: how many versions the
/// newest weights known before it (the highest weight or synced version of the earlier steps
/// held) were ahead of the weights its experience was made with; 0 is on-policy.
fn step_rows(record: &PipelineRecord, stage_names: &[String]) -> Vec<StepRow> {
    let mut newest_before: Option<u64> = None;
    let mut rows = Vec::with_capacity(record.steps.len());
    for step in &record.steps {
        rows.push(step_row(step, newest_before, stage_names));
        let newest = step.weight_version.max(step.synced_version);
        newest_before = Some(newest_before.map_or(newest, |held| held.max(newest)));
    }
    rows.reverse();
    rows.truncate(STEPS_SHOWN);
    rows
}

fn step_row(step: &PipelineStepInfo, newest_before: Option<u64>, names: &[String]) -> StepRow {
    StepRow {
        step: step.step,
        finished: super::views::time_text(step.finished_unix_ms),
        rows: step.rows,
        weight_version: step.weight_version,
        synced_version: match step.synced_version {
            0 => "—".to_string(),
            version => version.to_string(),
        },
        staleness: match newest_before {
            Some(newest) => newest.saturating_sub(step.weight_version).to_string(),
            None => "—".to_string(),
        },
        sync_ms: if step.sync_ms > 0.0 {
            format!("{:.1}", step.sync_ms)
        } else {
            String::new()
        },
        stage_bytes: super::views::bytes(step.stage_bytes),
        stages: names
            .iter()
            .map(|name| {
                step.stages
                    .iter()
                    .find(|time| &time.stage == name)
                    .map(|time| format!("{:.3} s ({:.0} rows/s)", time.seconds, time.rows_per_s))
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= DRAWN_NAME {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(DRAWN_NAME - 1).collect();
        short.push('…');
        short
    }
}

/// A curve from the right side of one box to the left side of a later one.
fn forward_edge(from: (u32, u32), to: (u32, u32), label: String) -> Edge {
    let (x1, y1) = (from.0 + BOX_WIDTH, from.1 + BOX_HEIGHT / 2);
    let (x2, y2) = (to.0, to.1 + BOX_HEIGHT / 2);
    let bend = (x2.saturating_sub(x1) / 2).max(20);
    Edge {
        path: format!(
            "M {x1} {y1} C {} {y1}, {} {y2}, {x2} {y2}",
            x1 + bend,
            x2.saturating_sub(bend)
        ),
        label,
        label_x: (x1 + x2) / 2,
        label_y: (y1 + y2) / 2 - 6,
        sync: false,
    }
}

/// The weight-sync edge: from the learning stage's bottom, under the graph, to the generating
/// stage's bottom.
fn sync_edge(learner: (u32, u32), generator: (u32, u32)) -> Edge {
    let (x1, y1) = (learner.0 + BOX_WIDTH / 2, learner.1 + BOX_HEIGHT);
    let (x2, y2) = (generator.0 + BOX_WIDTH / 2, generator.1 + BOX_HEIGHT);
    let low = y1.max(y2) + 34;
    Edge {
        path: format!("M {x1} {y1} C {x1} {low}, {x2} {low}, {x2} {y2}"),
        label: "weight sync".to_string(),
        label_x: (x1 + x2) / 2,
        label_y: low + 14,
        sync: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use troupe_proto::{PipelineStageInfo, PipelineStageTime};

    fn stage(name: &str, group: &str, inputs: &[&str], outputs: &[&str]) -> PipelineStageInfo {
        PipelineStageInfo {
            name: name.to_string(),
            group: group.to_string(),
            members: 1,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            dispatch: "rank-zero".to_string(),
        }
    }

    fn step(step: u64, weight_version: u64, synced_version: u64) -> PipelineStepInfo {
        PipelineStepInfo {
            step,
            weight_version,
            synced_version,
            stages: vec![PipelineStageTime {
                stage: "generate".to_string(),
                seconds: 0.5,
                rows_per_s: 128.0,
                ..PipelineStageTime::default()
            }],
            ..PipelineStepInfo::default()
        }
    }

    #[test]
    fn lays_stages_out_by_depth_and_computes_staleness() {
        let record = PipelineRecord {
            pipeline_id: "p".to_string(),
            session: "s".to_string(),
            stages: vec![
                stage("generate", "rollout", &["prompt"], &["response"]),
                stage("score", "reward", &["response"], &["reward"]),
                stage("train", "trainer", &["response", "reward"], &["loss"]),
            ],
            learning_group: "trainer".to_string(),
            generating_group: "rollout".to_string(),
            steps: VecDeque::from([step(0, 0, 1), step(1, 1, 2), step(2, 1, 0)]),
            last_report: Instant::now(),
        };
        let view = PipelineView::of(&record, Instant::now());
        let xs: Vec<(String, u32)> = view.boxes.iter().map(|b| (b.name.clone(), b.x)).collect();
        let column = |n: u32| MARGIN + n * (BOX_WIDTH + COLUMN_GAP);
        assert_eq!(
            xs,
            [
                ("source".to_string(), column(0)),
                ("generate".to_string(), column(1)),
                ("score".to_string(), column(2)),
                ("train".to_string(), column(3)),
            ]
        );
        assert_eq!(view.boxes[1].seconds, "0.500 s");
        assert_eq!(view.boxes[1].rows_per_s, "128 rows/s");
        // source→generate, generate→score, generate→train (response), score→train, sync.
        assert_eq!(view.edges.len(), 5);
        assert!(view.edges.last().is_some_and(|e| e.sync));
        let staleness: Vec<_> = view.steps.iter().map(|s| s.staleness.clone()).collect();
        assert_eq!(staleness, ["1", "0", "—"], "newest first");
        assert_eq!(view.steps[0].stages, ["0.500 s (128 rows/s)", "", ""]);
    }
}
