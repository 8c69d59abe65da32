//! Faults a run injects into itself, to show (and test) that it survives them:
//! `--inject-fault trainer-1@5,rollout-0@9` kills the worker of each named actor while that step
//! runs, as a crash would (`Cluster::restart`: the head stops the process at once and restarts
//! it per its `max_restarts`). The run's observer fires them, and notes each step's end to the
//! run's recovery (checkpoints, progress).

use super::error::{RecipeError, Result};
use super::recovery::Recovery;
use super::run_log::Observer;
use std::time::{Duration, Instant};
use troupe::pipeline::{BoxError, StepObserver, StepReport};
use troupe::Cluster;

/// Kill the actor watched as `role` while step `step` (1-based, as `metrics.jsonl` counts)
/// runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    pub role: String,
    pub step: usize,
}

/// Parses `ROLE@STEP[,ROLE@STEP...]` (empty: none). Roles are checked against the run's actors
/// when the run starts (`check_roles`); a step must be 2 or later (the first step's start is
/// not a step's end to time the kill from).
pub fn parse_faults(text: &str) -> Result<Vec<Fault>> {
    let bad = |why: String| RecipeError::Config(format!("--inject-fault `{text}`: {why}"));
    let mut faults = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (role, step) = item
            .split_once('@')
            .ok_or_else(|| bad(format!("`{item}` is not ROLE@STEP")))?;
        let step: usize = step
            .parse()
            .map_err(|_| bad(format!("`{step}` in `{item}` is not a step number")))?;
        if step < 2 {
            return Err(bad(format!("`{item}`: faults start at step 2")));
        }
        faults.push(Fault {
            role: role.to_string(),
            step,
        });
    }
    Ok(faults)
}

/// Refuses faults naming an actor the run does not have.
pub fn check_roles(faults: &[Fault], recovery: &Recovery) -> Result<()> {
    let roles = recovery.roles();
    for fault in faults {
        if !roles.contains(&fault.role) {
            return Err(RecipeError::Config(format!(
                "--inject-fault: no actor `{}` in this run (it has: {})",
                fault.role,
                roles.join(", ")
            )));
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_are_named() {
        let faults = parse_faults("trainer-1@5, rollout-0@9").unwrap();
        assert_eq!(
            faults,
            vec![
                Fault {
                    role: "trainer-1".into(),
                    step: 5
                },
                Fault {
                    role: "rollout-0".into(),
                    step: 9
                }
            ]
        );
        assert!(parse_faults("").unwrap().is_empty());
        for (bad, says) in [
            ("trainer", "ROLE@STEP"),
            ("trainer@x", "not a step number"),
            ("trainer@1", "start at step 2"),
        ] {
            let err = parse_faults(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
