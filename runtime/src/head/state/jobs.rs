//! Job transitions of the head's state: submission (idempotent per submission id), placement of
//! the entrypoint from the pending queue, its start, exit and stop (with the actors it spawned),
//! and deletion. Each transition marks the job dirty, so the head queues its record for the disk
//! before the state lock is released. Recovery (restarts, heartbeats, lost nodes) is in
//! `job_recovery.rs`.

use super::{HeadState, Order};
use crate::scheduler::{Allocation, PlacementError, Request};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tonic::Status;
use troupe_proto::{JobInfo, JobSpec, JobStatus, StartJobRequest, StopJobOrder};

/// A job as the head keeps it.
pub(crate) struct JobRecord {
    pub info: JobInfo,
    pub allocation: Option<Allocation>,
    pub node_address: String,
    /// Set for a job found RUNNING when the head started: no node has claimed it yet.
    pub unclaimed_since: Option<Instant>,
    /// When it was placed on its node (or claimed by it).
    pub running_since: Option<Instant>,
    /// When the last stop order went out, and its grace period.
    pub stop_sent: Option<(Instant, u64)>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn request_of_job(spec: &JobSpec) -> Request {
    Request {
        cpu_milli: (spec.entrypoint_num_cpus * 1000.0).round() as u64,
        gpu_milli: (spec.entrypoint_num_gpus * 1000.0).round() as u64,
        ..Request::default()
    }
}

/// How an entrypoint ended, as the node reported it.
pub(crate) struct JobExit {
    pub exit_code: i32,
    pub signal: i32,
    pub log_tail: String,
}

impl HeadState {
    /// Records a new job and tries to place it. A submission id seen before with the same spec
    /// answers `Ok(true)` and runs nothing; with another spec it is ALREADY_EXISTS.
    pub fn submit_job(
        &mut self,
        submission_id: &str,
        spec: JobSpec,
        now: Instant,
    ) -> Result<(bool, Vec<Order>), Status> {
        if let Some(existing) = self.jobs.get(submission_id) {
            if existing.info.spec.as_ref() == Some(&spec) {
                return Ok((true, Vec::new()));
            }
            return Err(Status::already_exists(format!(
                "job `{submission_id}` was already submitted with another entrypoint, working directory, environment, resources or metadata"
            )));
        }
        let request = request_of_job(&spec);
        if let Err(PlacementError::Infeasible(reason)) = self.could_ever_fit(&request) {
            if !self.scheduler_is_empty() {
                return Err(Status::failed_precondition(format!(
                    "no node could ever run this entrypoint: {reason}"
                )));
            }
        }
        let info = JobInfo {
            submission_id: submission_id.to_string(),
            status: JobStatus::Pending as i32,
            spec: Some(spec),
            message: "waiting for a node to run the entrypoint".to_string(),
            submit_time_ms: now_ms(),
            ..JobInfo::default()
        };
        self.jobs.insert(
            submission_id.to_string(),
            JobRecord {
                info,
                allocation: None,
                node_address: String::new(),
                unclaimed_since: None,
                running_since: None,
                stop_sent: None,
            },
        );
        self.pending_jobs.push_back(submission_id.to_string());
        self.dirty_jobs.insert(submission_id.to_string());
        Ok((false, self.schedule(now)))
    }

    fn scheduler_is_empty(&self) -> bool {
        !self.nodes.values().any(|node| node.alive)
    }

    /// Places pending entrypoints, in submission order.
    pub(super) fn place_jobs(&mut self, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let queue = std::mem::take(&mut self.pending_jobs);
        for id in queue {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if job.info.status() != JobStatus::Pending {
                continue;
            }
            let spec = job.info.spec.clone().unwrap_or_default();
            match self.scheduler.place(&request_of_job(&spec)) {
                Ok(allocation) => {
                    let node_address = self
                        .nodes
                        .get(&allocation.node_id)
                        .map(|node| node.address.clone())
                        .unwrap_or_default();
                    job.info.status = JobStatus::Running as i32;
                    job.info.node_id = allocation.node_id.clone();
                    job.info.start_time_ms = now_ms();
                    job.info.message = format!("running on node {}", allocation.node_id);
                    job.node_address = node_address.clone();
                    job.running_since = Some(now);
                    orders.push(Order::StartJob {
                        node_address,
                        request: StartJobRequest {
                            submission_id: id.clone(),
                            entrypoint: spec.entrypoint.clone(),
                            package_hash: spec.working_dir_package.clone(),
                            env: spec.env_vars.clone(),
                            gpu_ids: allocation.gpus.iter().map(|gpu| gpu.index).collect(),
                            cpu_milli: allocation.cpu_milli,
                        },
                    });
                    job.allocation = Some(allocation);
                    self.dirty_jobs.insert(id);
                }
                Err(err) => {
                    let message = format!("waiting for a node to run the entrypoint: {err}");
                    if job.info.message != message {
                        job.info.message = message;
                        self.dirty_jobs.insert(id.clone());
                    }
                    self.pending_jobs.push_back(id);
                }
            }
        }
        orders
    }

    /// The node started the entrypoint as `pid`.
    /// The node started the entrypoint as `pid`. A stop that went out before the start reached
    /// the node is sent again.
    pub fn job_started(&mut self, id: &str, pid: u32, now: Instant) -> Vec<Order> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Vec::new();
        };
        if job.info.status() != JobStatus::Running {
            return Vec::new();
        }
        job.info.pid = pid;
        self.dirty_jobs.insert(id.to_string());
        match job.stop_sent {
            Some((_, grace_ms)) => self.stop_order(id, grace_ms, now).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// A stop order for a running job's node, noted so it can be sent again if it gets lost.
    pub(super) fn stop_order(&mut self, id: &str, grace_ms: u64, now: Instant) -> Option<Order> {
        let job = self.jobs.get_mut(id)?;
        job.stop_sent = Some((now, grace_ms));
        (!job.node_address.is_empty()).then(|| Order::StopJob {
            node_address: job.node_address.clone(),
            order: StopJobOrder {
                submission_id: id.to_string(),
                grace_ms,
            },
        })
    }

    /// Settles a running job: frees its resources and stops its actors.
    pub(super) fn finish_job(
        &mut self,
        id: &str,
        status: JobStatus,
        message: String,
        now: Instant,
    ) -> Vec<Order> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Vec::new();
        };
        job.info.status = status as i32;
        job.info.message = message;
        job.info.end_time_ms = now_ms();
        job.unclaimed_since = None;
        if let Some(allocation) = job.allocation.take() {
            self.scheduler.release(&allocation);
        }
        self.dirty_jobs.insert(id.to_string());
        let mut orders = self.stop_job_actors(id);
        orders.extend(self.schedule(now));
        orders
    }

    /// Stops the non-detached actors that the job's processes spawned.
    fn stop_job_actors(&mut self, id: &str) -> Vec<Order> {
        let owned: Vec<String> = self
            .actors
            .values()
            .filter(|actor| {
                actor.spec.job_id == id
                    && !actor.info.detached
                    && actor.info.state() != troupe_proto::ActorState::Dead
            })
            .map(|actor| actor.info.id.clone())
            .collect();
        let mut orders = Vec::new();
        for actor_id in owned {
            if let Ok(more) = self.kill_actor(&actor_id, false, &format!("its job {id} ended")) {
                orders.extend(more);
            }
        }
        orders
    }

    /// The entrypoint could not be started on its node.
    pub fn job_start_failed(&mut self, id: &str, why: &str, now: Instant) -> Vec<Order> {
        let Some(job) = self.jobs.get(id) else {
            return Vec::new();
        };
        if job.info.status() != JobStatus::Running {
            return Vec::new();
        }
        if job.info.stop_requested {
            let message = "stopped by request before its entrypoint started".to_string();
            return self.finish_job(id, JobStatus::Stopped, message, now);
        }
        let message = format!("the entrypoint could not start: {why}");
        self.finish_job(id, JobStatus::Failed, message, now)
    }

    /// The entrypoint exited (by itself, or after a stop).
    pub fn job_exited(
        &mut self,
        node_id: &str,
        id: &str,
        exit: JobExit,
        now: Instant,
    ) -> Vec<Order> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Vec::new();
        };
        // Entrypoints never move between nodes: a report under another node id is the same node
        // agent, registered again (the head restarted) while the report was on its way.
        if job.info.status() != JobStatus::Running {
            return Vec::new();
        }
        if job.info.node_id != node_id {
            tracing::debug!(
                job = id,
                reported_by = node_id,
                "exit reported under an earlier node id"
            );
        }
        job.info.has_exit_code = exit.signal == 0;
        job.info.exit_code = exit.exit_code;
        job.info.signal = exit.signal;
        job.info.log_tail = exit.log_tail;
        let how = if exit.signal != 0 {
            format!("was killed by signal {}", exit.signal)
        } else {
            format!("exited with code {}", exit.exit_code)
        };
        let (status, message) = if job.info.stop_requested {
            (
                JobStatus::Stopped,
                format!("stopped by request; the entrypoint {how}"),
            )
        } else if exit.signal == 0 && exit.exit_code == 0 {
            (JobStatus::Succeeded, format!("the entrypoint {how}"))
        } else {
            let mut message = format!("the entrypoint {how}");
            if !job.info.log_tail.trim().is_empty() {
                message.push_str("; last lines of its log:\n");
                message.push_str(job.info.log_tail.trim_end());
            }
            (JobStatus::Failed, message)
        };
        self.finish_job(id, status, message, now)
    }

    /// Stops a job: a pending one at once, a running one by an order to its node (SIGTERM, then
    /// SIGKILL after `grace_ms`). Answers whether it was still going.
    pub fn stop_job(
        &mut self,
        id: &str,
        grace_ms: u64,
        now: Instant,
    ) -> Result<(bool, Vec<Order>), Status> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Err(Status::not_found(format!(
                "no job with submission id `{id}`"
            )));
        };
        match job.info.status() {
            JobStatus::Pending => {
                job.info.stop_requested = true;
                self.pending_jobs.retain(|pending| pending != id);
                let orders = self.finish_job(
                    id,
                    JobStatus::Stopped,
                    "stopped by request before it started".to_string(),
                    now,
                );
                Ok((true, orders))
            }
            JobStatus::Running => {
                job.info.stop_requested = true;
                job.info.message = format!("stopping: SIGTERM sent, SIGKILL after {grace_ms} ms");
                self.dirty_jobs.insert(id.to_string());
                let mut orders: Vec<Order> =
                    self.stop_order(id, grace_ms, now).into_iter().collect();
                orders.extend(self.stop_job_actors(id));
                Ok((true, orders))
            }
            _ => Ok((false, Vec::new())),
        }
    }

    /// Forgets a finished job.
    pub fn delete_job(&mut self, id: &str) -> Result<(), Status> {
        let Some(job) = self.jobs.get(id) else {
            return Err(Status::not_found(format!(
                "no job with submission id `{id}`"
            )));
        };
        if !crate::jobs::is_finished(job.info.status()) {
            return Err(Status::failed_precondition(format!(
                "job `{id}` has not finished ({}); stop it first",
                crate::jobs::status_name(job.info.status())
            )));
        }
        self.jobs.remove(id);
        self.dirty_jobs.insert(id.to_string());
        Ok(())
    }
}
