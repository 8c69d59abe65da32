//! Surviving failures in a recipe's run (the design's "Failure and recovery"). When a step
//! fails, the run asks the head what happened to its actors: if some restarted (their worker
//! was killed, panicked, or their node died and they were placed elsewhere), it brings them
//! back to where the run was, then runs again from the step that failed:
//!
//! - a restarted trainer takes over the whole state (weights, AdamW moments, step, phase) of a
//!   data-parallel peer that survived; when every trainer restarted, they all load the latest
//!   checkpoint (`every` steps, `--checkpoint-every`) and the run goes back to its step;
//! - the trainers form a new all-reduce group, and trainers and rollouts a new weight-sync
//!   group (a restarted actor is in none of the old ones), then the rollouts are brought to the
//!   trainers' weight version before they generate again;
//! - a restarted reference gets its frozen weights again; other roles with state have a
//!   `Keeper` that takes it at each checkpoint and puts it back (PPO's critic and reward model);
//!   the reward and prompt actors keep no state between steps.
//!
//! A failure in which no actor restarted (bad input, a bug) is not retried: the run stops with
//! it. Each recovery is recorded: what failed, when, which actors restarted, where the trainers'
//! state came from, and what it cost (steps run again, seconds lost).

use super::error::{RecipeError, Result};
use super::policy::PolicyActors;
use crate::roles::reference::ReferenceHandle;
use crate::roles::WeightSet;
use futures::future::BoxFuture;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use troupe::pipeline::Pipeline;
use troupe::proto::ActorState;
use troupe::{ActorHandle, ActorRef, Cluster};

/// How long a recovery waits for the run's actors to be back (placed and constructed).
const BACK_WITHIN: Duration = Duration::from_secs(180);
/// How long the check after each step waits for the head.
const HEAD_CHECK_PATIENCE: Duration = Duration::from_millis(500);
/// Tries at bringing the run back (another actor may die during one).
const RESTORE_ATTEMPTS: usize = 3;
/// How long a failure may go without any actor showing a restart before it counts as one no
/// restart explains (twice the head's default node timeout, so a node's death is seen; a head
/// with a longer timeout still has restarts caught after each step, `step_done`).
const RESTART_SHOWS_WITHIN: Duration = Duration::from_secs(10);

/// One recovery, as the run's report and metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryEvent {
    /// The step that failed.
    pub step: usize,
    /// Seconds into the run when the failure was seen (the run's clock starts before its warm
    /// start).
    pub at_s: f64,
    /// The error, on one line.
    pub failure: String,
    /// The actors that restarted: role, id, and the node they were on.
    pub restarted: Vec<String>,
    /// Where the trainers' state came from: "peer trainer-N", "checkpoint of step N", or
    /// "kept" when no trainer restarted.
    pub trainers_from: String,
    /// The step the run went on from.
    pub resumed_at_step: usize,
    /// Steps whose work was thrown away and run again (the failed one included).
    pub steps_redone: usize,
    /// From when the step the run went on from first began (the end of the step before it) to
    /// the moment it went on: the work thrown away and the recovery.
    pub seconds_lost: f64,
}

/// Checkpoints for recovery: the trainers' whole state every `every` steps, the latest kept.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub dir: PathBuf,
    pub every: usize,
}

/// Where the run goes on after a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub step: usize,
    pub version: u64,
}

/// An async action of a keeper.
pub type KeeperAction = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Keeps a role's state for its restart: `snapshot` takes it (when the role is added and at
/// every checkpoint; `None` for a role whose state never changes), `restore` puts it back
/// into the restarted actor.
pub struct Keeper {
    pub snapshot: Option<KeeperAction>,
    pub restore: KeeperAction,
}

/// A watched actor found restarted: its new incarnation and node, as seen then.
struct Restarted {
    index: usize,
    incarnation: u64,
    node: String,
}

/// One actor the run watches, with its role's name.
struct Watched {
    role: String,
    actor: ActorRef,
    incarnation: u64,
    node: String,
}

/// Watches a run's actors and brings the run back after a failure.
pub struct Recovery {
    cluster: Cluster,
    policy: PolicyActors,
    watched: Vec<Watched>,
    /// What brings back roles with state other than the trainers', by role.
    keepers: Vec<(String, Keeper)>,
    checkpoints: Option<Checkpoints>,
    /// The latest checkpoint: (steps done when it was written, its directory).
    latest: Option<(usize, PathBuf)>,
    /// The weight version when the run's first step began (step `s` trains version
    /// `start_version + s`).
    start_version: u64,
    started: Instant,
    /// When the last step finished (or the run began).
    last_progress: Instant,
    /// When each step finished, by steps done (0: when watching began).
    step_ends: std::collections::BTreeMap<usize, Instant>,
    pub events: Vec<RecoveryEvent>,
    /// Recoveries allowed in one run before a failure stops it.
    pub max_recoveries: usize,
}

/// Words for `err` and its causes, on one line.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}

impl Recovery {
    /// Watches the trainers and rollouts of `policy` and `others` (role name, actor), as they
    /// are now; `start_version` is the trainers' version as the run's first step begins.
    pub async fn new(
        cluster: &Cluster,
        policy: &PolicyActors,
        others: Vec<(String, ActorRef)>,
        start_version: u64,
    ) -> Result<Self> {
        let mut actors: Vec<(String, ActorRef)> = Vec::new();
        for (rank, trainer) in policy.trainers.members().iter().enumerate() {
            actors.push((format!("trainer-{rank}"), trainer.actor_ref().clone()));
        }
        for (rank, rollout) in policy.rollouts.members().iter().enumerate() {
            actors.push((format!("rollout-{rank}"), rollout.actor_ref().clone()));
        }
        actors.extend(others);
        let mut watched = Vec::with_capacity(actors.len());
        for (role, actor) in actors {
            let info = cluster.actor_info(&actor).await?;
            if info.restarts > 0 {
                // Its state (a warm start, a trained reward model) was lost before anything
                // kept it: going on would be silently wrong.
                return Err(RecipeError::Recovery {
                    why: format!(
                        "{role} ({}) restarted {} time(s) before the run began, losing what it \
                         had learned",
                        actor.id(),
                        info.restarts
                    ),
                });
            }
            watched.push(Watched {
                role,
                actor,
                incarnation: info.incarnation,
                node: info.node_id,
            });
        }
        Ok(Recovery {
            cluster: cluster.clone(),
            policy: policy.clone(),
            watched,
            keepers: Vec::new(),
            checkpoints: None,
            latest: None,
            start_version,
            started: Instant::now(),
            last_progress: Instant::now(),
            step_ends: std::collections::BTreeMap::from([(0, Instant::now())]),
            events: Vec::new(),
            max_recoveries: 10,
        })
    }

    /// The actor watched as `role` ("trainer-1", "rollout-0", "reference", ...).
    pub fn actor_of(&self, role: &str) -> Option<ActorRef> {
        self.watched
            .iter()
            .find(|watched| watched.role == role)
            .map(|watched| watched.actor.clone())
    }

    /// The roles watched, in order.
    pub fn roles(&self) -> Vec<String> {
        self.watched
            .iter()
            .map(|watched| watched.role.clone())
            .collect()
    }

    /// A restarted reference gets `frozen` again.
    pub fn with_reference(self, reference: ReferenceHandle, frozen: WeightSet) -> Self {
        self.with_keeper(
            "reference",
            Keeper {
                snapshot: None,
                restore: Box::new(move || {
                    let (reference, frozen) = (reference.clone(), frozen.clone());
                    Box::pin(async move { Ok(reference.load_weights(frozen).await?) })
                }),
            },
        )
    }

    /// The watched role `role` restarts with what `keeper` kept (take the first snapshot with
    /// `snapshot_all` once every keeper is added).
    pub fn with_keeper(mut self, role: &str, keeper: Keeper) -> Self {
        self.keepers.push((role.to_string(), keeper));
        self
    }

    /// Every keeper takes its role's state now.
    pub async fn snapshot_all(&self) -> Result<()> {
        for (_, keeper) in &self.keepers {
            if let Some(snapshot) = &keeper.snapshot {
                snapshot().await?;
            }
        }
        Ok(())
    }

    /// Writes the trainers' state every `every` steps under `dir` (0 turns it off), so a run
    /// whose trainers all restart goes back to the latest one instead of stopping.
    pub fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = (checkpoints.every > 0).then_some(checkpoints);
        self
    }

    /// Counts the run's time from `started` (the run's own clock).
    pub fn started_at(mut self, started: Instant) -> Self {
        self.started = started;
        self
    }

    /// Called after each step: checks that no actor restarted unseen (between steps, without
    /// failing a call: it would serve its initial state), notes progress, and writes a
    /// checkpoint when one is due, replacing the one before. An actor that restarted is
    /// returned as an error, which the run recovers from like any other failure.
    pub async fn step_done(&mut self, step: usize) -> Result<()> {
        self.last_progress = Instant::now();
        let done = step + 1;
        self.step_ends.insert(done, self.last_progress);
        for watched in &self.watched {
            // While the head is away (restarting), no actor can restart either: the check is
            // skipped rather than waited for, so the run goes on through a head outage.
            let Ok(info) =
                tokio::time::timeout(HEAD_CHECK_PATIENCE, self.cluster.actor_info(&watched.actor))
                    .await
            else {
                tracing::debug!(
                    "the head did not answer; restarts are checked after the next step"
                );
                break;
            };
            let info = info?;
            if info.incarnation != watched.incarnation {
                return Err(RecipeError::Recovery {
                    why: format!(
                        "{} ({}) restarted between steps (incarnation {} -> {})",
                        watched.role,
                        watched.actor.id(),
                        watched.incarnation,
                        info.incarnation
                    ),
                });
            }
        }
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        if !done.is_multiple_of(checkpoints.every) {
            return Ok(());
        }
        let dir = checkpoints.dir.join(format!("step-{done}"));
        let written = self.policy.save_checkpoint(&dir).await?;
        self.snapshot_all().await?;
        if let Some((_, previous)) = self.latest.replace((done, written)) {
            if previous != dir {
                let _ = std::fs::remove_dir_all(&previous);
            }
        }
        self.last_progress = Instant::now();
        Ok(())
    }

    /// Brings the run back after step `step` failed with `failure`: waits for restarted actors,
    /// restores them, forms the groups again, syncs the rollouts; returns where to go on. A
    /// failure no restart explains, or one past `max_recoveries`, is returned as the error.
    pub async fn recover(
        &mut self,
        pipeline: &Pipeline,
        step: usize,
        failure: RecipeError,
    ) -> Result<Resume> {
        let seen = Instant::now();
        let failure_text = one_line(&failure);
        if self.events.len() >= self.max_recoveries {
            return Err(RecipeError::Recovery {
                why: format!(
                    "{} recoveries already; giving up on: {failure_text}",
                    self.events.len()
                ),
            });
        }
        tracing::warn!(step, failure = failure_text, "a step failed: recovering");
        let mut attempt = 0;
        let (restarted, trainers_from, resume) = loop {
            attempt += 1;
            match self.restore(pipeline).await {
                Ok(Some(restored)) => break restored,
                // No actor restarted: the failure is not one a restart explains.
                Ok(None) => return Err(failure),
                // Another actor died while this one was being brought back: start over, with
                // it among the restarted.
                Err(err) if attempt < RESTORE_ATTEMPTS => {
                    tracing::warn!(attempt, error = %one_line(&err), "recovery interrupted; again");
                }
                Err(err) => {
                    return Err(RecipeError::Recovery {
                        why: format!(
                            "{} (after {attempt} attempts; the failure was: {failure_text})",
                            one_line(&err)
                        ),
                    })
                }
            }
        };
        // The incarnations brought back are those seen when the recovery began: one that
        // restarted again since is caught after the next step.
        let mut described = Vec::with_capacity(restarted.len());
        for found in restarted {
            let watched = &mut self.watched[found.index];
            described.push(format!(
                "{} ({}, on node {}, now on {})",
                watched.role,
                watched.actor.id(),
                watched.node,
                found.node
            ));
            watched.incarnation = found.incarnation;
            watched.node = found.node;
        }
        let event = RecoveryEvent {
            step,
            at_s: seen.duration_since(self.started).as_secs_f64(),
            failure: failure_text,
            restarted: described,
            trainers_from,
            resumed_at_step: resume.step,
            steps_redone: (step + 1).saturating_sub(resume.step),
            // From when the step the run goes on from first began: work thrown away included.
            seconds_lost: self
                .step_ends
                .get(&resume.step)
                .unwrap_or(&self.last_progress)
                .elapsed()
                .as_secs_f64(),
        };
        tracing::warn!(
            step,
            resumed_at = resume.step,
            seconds_lost = event.seconds_lost,
            restarted = ?event.restarted,
            "recovered"
        );
        self.events.push(event);
        self.last_progress = Instant::now();
        // The steps from `resume.step` on are run again: their time counts from now.
        self.step_ends.retain(|done, _| *done < resume.step);
        self.step_ends.insert(resume.step, self.last_progress);
        Ok(resume)
    }

    /// Waits for the restarted actors and brings them back: the trainers' state, the reference's
    /// weights, the groups formed again, the rollouts synced. `None` when no actor restarted.
    async fn restore(
        &self,
        pipeline: &Pipeline,
    ) -> Result<Option<(Vec<Restarted>, String, Resume)>> {
        let restarted = self
            .wait_for_restarts()
            .await
            .map_err(|why| RecipeError::Recovery { why })?;
        if restarted.is_empty() {
            return Ok(None);
        }
        let restarted_roles: Vec<&str> = restarted
            .iter()
            .map(|found| self.watched[found.index].role.as_str())
            .collect();
        let (trainers_from, resume) = self.restore_trainers(&restarted_roles).await?;
        for (role, keeper) in &self.keepers {
            if restarted_roles.contains(&role.as_str()) {
                (keeper.restore)().await?;
            }
        }
        pipeline.reconnect().await?;
        let synced = pipeline.sync_weights().await?;
        if synced.version != resume.version {
            return Err(RecipeError::Recovery {
                why: format!(
                    "the rollouts serve version {} after recovery, the trainers hold {}",
                    synced.version, resume.version
                ),
            });
        }
        Ok(Some((restarted, trainers_from, resume)))
    }

    /// Waits until every watched actor is alive; returns the indexes of those that restarted
    /// since last seen (empty when none did within `RESTART_SHOWS_WITHIN`).
    async fn wait_for_restarts(&self) -> std::result::Result<Vec<Restarted>, String> {
        let began = Instant::now();
        loop {
            let mut all_alive = true;
            let mut restarted = Vec::new();
            for (index, watched) in self.watched.iter().enumerate() {
                let info = self
                    .cluster
                    .actor_info(&watched.actor)
                    .await
                    .map_err(|err| format!("asking the head about {}: {err}", watched.role))?;
                match info.state() {
                    ActorState::Dead => {
                        return Err(format!(
                            "{} ({}) is dead and will not restart: {}",
                            watched.role,
                            watched.actor.id(),
                            info.death_reason
                        ))
                    }
                    ActorState::Alive => {}
                    _ => all_alive = false,
                }
                if info.incarnation != watched.incarnation {
                    restarted.push(Restarted {
                        index,
                        incarnation: info.incarnation,
                        node: info.node_id,
                    });
                }
            }
            if all_alive && !restarted.is_empty() {
                return Ok(restarted);
            }
            if all_alive && began.elapsed() > RESTART_SHOWS_WITHIN {
                return Ok(Vec::new());
            }
            if began.elapsed() > BACK_WITHIN {
                return Err(format!(
                    "the run's actors were not all back within {} s",
                    BACK_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Gives restarted trainers the state of a surviving peer, or all trainers the latest
    /// checkpoint; forms their all-reduce group again. Returns where the state came from and
    /// where the run goes on.
    async fn restore_trainers(&self, restarted_roles: &[&str]) -> Result<(String, Resume)> {
        let trainers = self.policy.trainers.members();
        let lost: Vec<usize> = (0..trainers.len())
            .filter(|rank| restarted_roles.contains(&format!("trainer-{rank}").as_str()))
            .collect();
        let survivor = (0..trainers.len()).find(|rank| !lost.contains(rank));
        let (from, version) = match survivor {
            Some(peer) => {
                let version = trainers[peer].weight_version().await?;
                // Survivors normally agree (a failed all-reduce applies no update anywhere);
                // if one applied an update the others did not, it takes the peer's state too.
                let mut targets = lost.clone();
                for rank in (0..trainers.len()).filter(|r| !lost.contains(r) && *r != peer) {
                    if trainers[rank].weight_version().await? != version {
                        targets.push(rank);
                    }
                }
                if targets.is_empty() {
                    ("kept".to_string(), version)
                } else {
                    let state = trainers[peer].training_state().await?;
                    for rank in &targets {
                        trainers[*rank]
                            .restore_training_state(state.clone())
                            .await?;
                    }
                    (format!("peer trainer-{peer}"), state.weights.version)
                }
            }
            None => {
                let Some((done, dir)) = &self.latest else {
                    return Err(RecipeError::Recovery {
                        why: "every trainer restarted and no checkpoint was written yet \
                              (--checkpoint-every)"
                            .to_string(),
                    });
                };
                let mut version = 0;
                for trainer in trainers {
                    trainer.load_checkpoint(dir.clone()).await?;
                    version = trainer.weight_version().await?;
                }
                (format!("checkpoint of step {done}"), version)
            }
        };
        // Also when no trainer restarted: a trainer whose step failed left its group.
        self.policy.form_data_parallel().await?;
        let step = usize::try_from(version.saturating_sub(self.start_version)).unwrap_or(0);
        Ok((from, Resume { step, version }))
    }
}
