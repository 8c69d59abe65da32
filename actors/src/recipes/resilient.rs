//! The RL run loop that survives failures, shared by the recipes: the pipeline runs the steps;
//! after each, the observer records it (`RunLog`), lets the recovery check for restarts and
//! write its checkpoints, and fires the injected faults (`faults.rs`); a failed step is handed
//! to the recovery (`recovery.rs`), and the run goes on from where it says, its record rewound
//! to match.

use super::error::Result;
use super::faults::Fault;
use super::policy::PolicyActors;
use super::recovery::Recovery;
use super::run_log::{Observer, RunLog};
use crate::tasks::TaskSpec;
use std::time::{Duration, Instant};
use troupe::data::Batch;
use troupe::pipeline::{BoxError, Pipeline, StepObserver, StepReport};
use troupe::Cluster;

/// The run's observer with recovery's bookkeeping and the injected faults.
pub struct GuardedObserver<'a> {
    pub inner: Observer<'a>,
    pub recovery: &'a mut Recovery,
    pub cluster: &'a Cluster,
    pub faults: &'a [Fault],
    /// Which faults fired already (a step run again after a recovery does not fire it twice).
    pub fired: &'a mut Vec<bool>,
    /// When the previous step ended (kills are timed into the next step from its length).
    pub last_end: Instant,
}

impl StepObserver for GuardedObserver<'_> {
    fn observe<'b>(
        &'b mut self,
        report: &'b StepReport,
    ) -> futures::future::BoxFuture<'b, std::result::Result<(), BoxError>> {
        Box::pin(async move {
            self.inner.observe(report).await?;
            self.recovery.step_done(report.step).await?;
            let step_length = self.last_end.elapsed();
            self.last_end = Instant::now();
            // `report.step` is 0-based: the next step is `report.step + 2` in 1-based terms. A
            // fault whose step went by unobserved (a recovery skipped its report) fires now.
            let next = report.step + 2;
            for (index, fault) in self.faults.iter().enumerate() {
                if fault.step > next || self.fired.get(index).copied().unwrap_or(true) {
                    continue;
                }
                self.fired[index] = true;
                let Some(actor) = self.recovery.actor_of(&fault.role) else {
                    continue;
                };
                // Into the step: a third of the last step's length after it starts.
                let delay = (step_length / 3).min(Duration::from_secs(5));
                let (cluster, role) = (self.cluster.clone(), fault.role.clone());
                tracing::warn!(role, step = next, "injecting a fault: killing the worker");
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Err(err) = cluster.restart(&actor).await {
                        tracing::error!(role, %err, "could not inject the fault");
                    }
                });
            }
            Ok(())
        })
    }
}

/// What a recovering run needs besides its pipeline.
pub struct RunParts<'a> {
    pub cluster: &'a Cluster,
    pub policy: &'a PolicyActors,
    pub task: &'a TaskSpec,
    /// Step scalars the progress bar shows.
    pub message_keys: &'a [&'a str],
    pub faults: &'a [Fault],
}

/// Runs steps `0..steps` of `pipeline` from weights of `start_version` (rollouts up to
/// `max_staleness` steps ahead), recording each in `log`; a step that fails because actors
/// died is run again once `recovery` brought them back.
pub async fn run_recovering(
    pipeline: &Pipeline,
    parts: RunParts<'_>,
    (steps, max_staleness, start_version): (usize, usize, u64),
    input: impl Fn(usize) -> Batch,
    log: &mut RunLog,
    recovery: &mut Recovery,
) -> Result<()> {
    let mut fired = vec![false; parts.faults.len()];
    let (mut first_step, mut version) = (0, start_version);
    loop {
        let mut observer = GuardedObserver {
            inner: Observer {
                log: &mut *log,
                policy: parts.policy,
                task: parts.task,
                message_keys: parts.message_keys,
            },
            recovery: &mut *recovery,
            cluster: parts.cluster,
            faults: parts.faults,
            fired: &mut fired,
            last_end: Instant::now(),
        };
        let outcome = pipeline
            .run_observed_from(
                first_step,
                steps,
                max_staleness,
                version,
                &input,
                &mut observer,
            )
            .await;
        let Err(failure) = outcome else {
            return Ok(());
        };
        let failed_step = log.steps_recorded();
        let resume = recovery
            .recover(pipeline, failed_step, failure.into())
            .await?;
        if let Some(event) = recovery.events.last() {
            log.recovered(event)?;
        }
        (first_step, version) = (resume.step, resume.version);
    }
}
