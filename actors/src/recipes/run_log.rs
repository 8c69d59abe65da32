//! What every RL run does around its pipeline, in one place for GRPO and PPO: start a record
//! (`metrics.jsonl`, a progress bar, the clock and the driver's byte counters), observe each
//! step (its step scalars, stage times and weight sync, and held-out success measured every few
//! steps on the rollouts' own nodes), and finish (the run's figures, a plot of chosen series).

use super::error::{RecipeError, Result};
use super::metrics::MetricsLog;
use super::plot::{self, Panel, Series};
use super::policy::PolicyActors;
use super::progress::Progress;
use crate::tasks::TaskSpec;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use troupe::pipeline::{BoxError, StepObserver, StepReport};

/// Writes the cluster's timeline since the run started (this driver's stages, every live
/// actor's calls) to `out/timeline.json`, for Perfetto, and returns its path; a failure is
/// printed and leaves the path empty (the run's results do not depend on it).
pub async fn write_timeline(cluster: &troupe::Cluster, out: &Path, started: Instant) -> PathBuf {
    let path = out.join("timeline.json");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_micros() as u64);
    let since = now_us.saturating_sub(started.elapsed().as_micros() as u64);
    match cluster.write_timeline(&path, since).await {
        Ok(spans) => {
            println!(
                "timeline: {spans} spans in {} (open it at https://ui.perfetto.dev)",
                path.display()
            );
            path
        }
        Err(err) => {
            eprintln!("could not write the timeline: {err}");
            PathBuf::new()
        }
    }
}

/// One held-out measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeldoutPoint {
    /// RL steps done (0: after the warm start).
    pub step: usize,
    /// Seconds since the run started (warm start included).
    pub seconds: f64,
    pub accuracy: f64,
}

/// The figures of a whole RL phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseFigures {
    pub steps: usize,
    pub seconds: f64,
    /// Bytes the driver sent and received in actor calls, per step (calls, receipts, step
    /// scalars, weight-sync and evaluation calls: everything).
    pub driver_bytes_per_step: f64,
    /// Bytes of batch data the stages read and kept, per step (what moved between members).
    pub stage_bytes_per_step: f64,
    pub weight_sync_ms_mean: f64,
    /// Tokens generated per second of the `generate` stage.
    pub rollout_tokens_per_s: f64,
    pub heldout_curve: Vec<HeldoutPoint>,
}

/// A run's record as it goes.
pub struct RunLog {
    log: MetricsLog,
    progress: Progress,
    started: Instant,
    phase_started: Instant,
    driver_bytes_at_start: u64,
    steps: usize,
    eval_every: usize,
    stage_bytes: u64,
    weight_sync_ms: Vec<f64>,
    tokens: f64,
    generate_s: f64,
    pub heldout_curve: Vec<HeldoutPoint>,
}

fn driver_bytes() -> u64 {
    troupe::call_bytes_sent() + troupe::call_bytes_received()
}

impl RunLog {
    /// Starts the record of an RL phase of `steps` steps in `out/metrics.jsonl`, evaluating
    /// every `eval_every` steps; `started` is when the run began, `start_accuracy` the
    /// held-out success the phase starts from.
    pub fn start(
        out: &Path,
        phase: &str,
        (steps, eval_every): (usize, usize),
        started: Instant,
        start_accuracy: f64,
    ) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        let log = MetricsLog::create(&path)
            .map_err(|err| RecipeError::io(format!("creating {}", path.display()), err))?;
        Ok(RunLog {
            log,
            progress: Progress::new(phase, steps as u64, eval_every as u64),
            started,
            phase_started: Instant::now(),
            driver_bytes_at_start: driver_bytes(),
            steps,
            eval_every: eval_every.max(1),
            stage_bytes: 0,
            weight_sync_ms: Vec::new(),
            tokens: 0.0,
            generate_s: 0.0,
            heldout_curve: vec![HeldoutPoint {
                step: 0,
                seconds: started.elapsed().as_secs_f64(),
                accuracy: start_accuracy,
            }],
        })
    }

    /// Whether held-out success is measured after step `index` (0-based).
    pub fn evaluates_after(&self, index: usize) -> bool {
        let step = index + 1;
        step.is_multiple_of(self.eval_every) || step == self.steps
    }

    /// Records one step: a `metrics.jsonl` line with its scalars, stage times, weight sync and
    /// (when measured) held-out success; the progress bar shows `message_keys`.
    pub fn record(
        &mut self,
        report: &StepReport,
        heldout: Option<f64>,
        message_keys: &[&str],
    ) -> Result<()> {
        let step = report.step + 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut row = serde_json::Map::new();
        row.insert("step".into(), step.into());
        row.insert("made_with_version".into(), report.weight_version.into());
        for (name, value) in report.scalars.iter().chain(&report.counts) {
            row.insert(name.clone(), (*value).into());
        }
        for timing in &report.timings {
            row.insert(format!("{}_s", timing.stage), timing.seconds.into());
            row.insert(
                format!("{}_fetch_s", timing.stage),
                timing.fetch_seconds.into(),
            );
            row.insert(
                format!("{}_member_s", timing.stage),
                timing.member_seconds.into(),
            );
            if timing.stage == "generate" {
                self.generate_s += timing.seconds;
            }
        }
        self.tokens += report.counts.get("response_tokens").copied().unwrap_or(0.0);
        self.stage_bytes += report.stage_bytes;
        row.insert("stage_bytes".into(), report.stage_bytes.into());
        if let Some(sync) = &report.weight_sync {
            self.weight_sync_ms.push(sync.milliseconds);
            row.insert("weight_sync_ms".into(), sync.milliseconds.into());
        }
        if let Some(accuracy) = heldout {
            row.insert("heldout_accuracy".into(), accuracy.into());
            self.heldout_curve.push(HeldoutPoint {
                step,
                seconds: elapsed,
                accuracy,
            });
        }
        row.insert("elapsed_s".into(), elapsed.into());
        let mut message: Vec<String> = message_keys
            .iter()
            .filter_map(|key| Some(format!("{key} {:.3}", report.scalars.get(*key)?)))
            .collect();
        if let Some(last) = self.heldout_curve.last() {
            message.push(format!("held-out {:.1}%", last.accuracy * 100.0));
        }
        self.progress.update(step as u64, &message.join(" | "));
        self.log
            .append(serde_json::Value::Object(row))
            .map_err(|err| RecipeError::io(format!("writing {}", self.log.path().display()), err))
    }

    /// Steps recorded so far (the index of the step in flight, 0-based).
    pub fn steps_recorded(&self) -> usize {
        self.log.rows().len()
    }

    /// Notes a recovery in `metrics.jsonl` (as `{"recovery": ...}`) and forgets the steps after
    /// `resumed_at` (0-based: the steps done when the run went on), which run again. Steps that
    /// trained before the failure but whose report it lost (it struck during their weight sync)
    /// get a row saying so.
    pub fn recovered(&mut self, event: &super::recovery::RecoveryEvent) -> Result<()> {
        let done = event.resumed_at_step;
        self.log.forget_after(done);
        self.heldout_curve.retain(|point| point.step <= done);
        let path = self.log.path().to_path_buf();
        let write_error = |err| RecipeError::io(format!("writing {}", path.display()), err);
        self.log
            .note(serde_json::json!({ "recovery": event }))
            .map_err(write_error)?;
        for step in self.log.rows().len()..done {
            self.log
                .append(serde_json::json!({
                    "step": step + 1,
                    "report_lost_in_recovery": true,
                }))
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// `(step, value)` of a recorded figure, for plots.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.log.series(key)
    }

    /// Mean of a recorded figure over the first and over the last `n` steps.
    pub fn first_and_last(&self, key: &str, n: usize) -> (f64, f64) {
        let values: Vec<f64> = self.series(key).into_iter().map(|(_, v)| v).collect();
        (
            mean(&values[..values.len().min(n)]),
            mean(&values[values.len().saturating_sub(n)..]),
        )
    }

    /// The mean of a recorded figure over the steps that recorded it (None if none did).
    pub fn mean(&self, key: &str) -> Option<f64> {
        let values: Vec<f64> = self.series(key).into_iter().map(|(_, v)| v).collect();
        (!values.is_empty()).then(|| mean(&values))
    }

    /// The last recorded value of a figure.
    pub fn last(&self, key: &str) -> Option<f64> {
        self.series(key).last().map(|(_, value)| *value)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.log.path().to_path_buf()
    }

    /// Closes the progress bar and sums the phase up.
    pub fn finish(&self) -> PhaseFigures {
        self.progress.finish();
        let steps = self.log.rows().len();
        let per_step = |total: f64| total / steps.max(1) as f64;
        PhaseFigures {
            steps,
            seconds: self.phase_started.elapsed().as_secs_f64(),
            driver_bytes_per_step: per_step((driver_bytes() - self.driver_bytes_at_start) as f64),
            stage_bytes_per_step: per_step(self.stage_bytes as f64),
            weight_sync_ms_mean: mean(&self.weight_sync_ms),
            rollout_tokens_per_s: self.tokens / self.generate_s.max(1e-9),
            heldout_curve: self.heldout_curve.clone(),
        }
    }

    /// Draws `curves.png`: held-out success with `reward_key`, then one panel per
    /// `(title, key)` of `more`.
    pub fn plot(
        &self,
        path: &Path,
        title: &str,
        reward_key: &str,
        more: &[(&str, &str)],
    ) -> Result<()> {
        let accuracy: Vec<(f64, f64)> = self
            .heldout_curve
            .iter()
            .map(|point| (point.step as f64, point.accuracy))
            .collect();
        let mut panels = vec![Panel {
            title: title.to_string(),
            x_label: "RL step".into(),
            series: vec![
                Series {
                    name: format!("mean {reward_key}"),
                    color: plot::BLUE,
                    points: self.series(reward_key),
                },
                Series {
                    name: "held-out success".into(),
                    color: plot::ORANGE,
                    points: accuracy,
                },
            ],
            y_range: None,
        }];
        for (panel_title, key) in more {
            panels.push(Panel {
                title: panel_title.to_string(),
                x_label: "RL step".into(),
                series: vec![Series {
                    name: key.to_string(),
                    color: plot::GREEN,
                    points: self.series(key),
                }],
                y_range: None,
            });
        }
        plot::write_png(path, &panels, 1000, 420)
            .map_err(|err| RecipeError::io(format!("writing {}", path.display()), err))
    }
}

/// The mean of `values` (0 when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Records every step in a `RunLog`, measuring held-out success on `task` with the policy's
/// rollouts when due.
pub struct Observer<'a> {
    pub log: &'a mut RunLog,
    pub policy: &'a PolicyActors,
    pub task: &'a TaskSpec,
    /// Step scalars the progress bar shows.
    pub message_keys: &'a [&'a str],
}

impl StepObserver for Observer<'_> {
    fn observe<'b>(
        &'b mut self,
        report: &'b StepReport,
    ) -> futures::future::BoxFuture<'b, std::result::Result<(), BoxError>> {
        Box::pin(async move {
            let heldout = if self.log.evaluates_after(report.step) {
                Some(self.policy.heldout_accuracy(self.task).await?)
            } else {
                None
            };
            self.log.record(report, heldout, self.message_keys)?;
            Ok(())
        })
    }
}
