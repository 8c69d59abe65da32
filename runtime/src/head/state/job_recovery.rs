//! Jobs when things go wrong: records read back when the head starts, entrypoints that node
//! agents still run claimed after a restart (at registration or from a heartbeat), heartbeats
//! reconciled with what the head expects (lost jobs fail, stray ones stop, lost stop orders go
//! out again), jobs of dead nodes, and running jobs that no node ever claims.

use super::jobs::{request_of_job, JobRecord};
use super::{HeadState, Order};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use troupe_proto::{JobInfo, JobStatus, StopJobOrder};

/// How long a node may take to list a job the head placed there before the head takes it for
/// lost.
const LISTING_GRACE: Duration = Duration::from_secs(10);
/// How long past its grace period a stop may go unanswered before it is sent again.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

impl HeadState {
    /// Takes in jobs read from disk when the head starts: pending ones queue again, running ones
    /// wait for their node to claim them.
    pub fn restore_jobs(&mut self, jobs: Vec<JobInfo>, now: Instant) {
        for info in jobs {
            let status = info.status();
            let id = info.submission_id.clone();
            if status == JobStatus::Pending {
                self.pending_jobs.push_back(id.clone());
            }
            let unclaimed_since = (status == JobStatus::Running).then_some(now);
            // A stop asked for before the restart may never have reached the node.
            let stop_sent =
                (status == JobStatus::Running && info.stop_requested).then_some((now, 0));
            self.jobs.insert(
                id,
                JobRecord {
                    info,
                    allocation: None,
                    node_address: String::new(),
                    unclaimed_since,
                    running_since: None,
                    stop_sent,
                },
            );
        }
    }

    /// A node died or its agent restarted: its jobs are gone, but for those it says it still runs.
    pub(super) fn fail_node_jobs(
        &mut self,
        node_id: &str,
        reason: &str,
        still_running: &HashMap<String, u32>,
        now: Instant,
    ) -> Vec<Order> {
        let lost: Vec<(String, bool)> = self
            .jobs
            .values()
            .filter(|job| {
                job.info.status() == JobStatus::Running
                    && job.info.node_id == node_id
                    && !still_running.contains_key(&job.info.submission_id)
            })
            .map(|job| (job.info.submission_id.clone(), job.info.stop_requested))
            .collect();
        let mut orders = Vec::new();
        for (id, stopping) in lost {
            let status = if stopping {
                JobStatus::Stopped
            } else {
                JobStatus::Failed
            };
            orders.extend(self.finish_job(
                &id,
                status,
                format!("its node was lost: {reason}"),
                now,
            ));
        }
        orders
    }

    /// A node that registers says which entrypoints it still runs (the head restarted): the head
    /// takes back those it still counts as running and orders the others stopped.
    pub(super) fn claim_jobs(
        &mut self,
        node_id: &str,
        node_address: &str,
        running: &HashMap<String, u32>,
        now: Instant,
    ) -> Vec<Order> {
        let mut orders = Vec::new();
        for (id, pid) in running {
            if self.claimable(id, node_id) {
                orders.extend(self.claim(id, node_id, node_address, *pid, now));
            } else {
                orders.push(kill_order(node_address, id));
            }
        }
        orders
    }

    /// Whether `node_id` may take `id` as its own: it runs there, or it waits to be claimed.
    fn claimable(&self, id: &str, node_id: &str) -> bool {
        self.jobs.get(id).is_some_and(|job| {
            job.info.status() == JobStatus::Running
                && (job.unclaimed_since.is_some() || job.info.node_id == node_id)
        })
    }

    /// Records that `node_id` runs the entrypoint of `id` (as `pid`, 0 when not known yet); a
    /// stop asked for meanwhile goes out to it.
    fn claim(
        &mut self,
        id: &str,
        node_id: &str,
        address: &str,
        pid: u32,
        now: Instant,
    ) -> Vec<Order> {
        let Some(job) = self.jobs.get(id) else {
            return Vec::new();
        };
        if job.unclaimed_since.is_none()
            && job.info.node_id == node_id
            && job.node_address == address
        {
            return Vec::new();
        }
        let request = job
            .info
            .spec
            .as_ref()
            .map(request_of_job)
            .unwrap_or_default();
        let allocation = self.scheduler.place_on(node_id, &request).ok();
        let Some(job) = self.jobs.get_mut(id) else {
            return Vec::new();
        };
        tracing::info!(job = id, node = node_id, "a node claimed a running job");
        job.unclaimed_since = None;
        job.running_since = Some(now);
        job.info.node_id = node_id.to_string();
        if pid > 0 {
            job.info.pid = pid;
        }
        job.info.message = format!("running on node {node_id}");
        job.node_address = address.to_string();
        job.allocation = allocation;
        self.dirty_jobs.insert(id.to_string());
        match job.stop_sent {
            Some((_, grace_ms)) => self.stop_order(id, grace_ms, now).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// A heartbeat lists the jobs a node has taken on. Listed jobs waiting to be claimed are
    /// claimed; listed jobs the head does not count as running there are ordered killed; stops
    /// that went unanswered past their grace period are sent again; running jobs of that node it
    /// no longer lists (past a grace period for starts still on their way) are lost.
    pub fn reconcile_jobs(&mut self, node_id: &str, listed: &[String], now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let Some(address) = self.nodes.get(node_id).map(|node| node.address.clone()) else {
            return orders;
        };
        for id in listed {
            if !self.claimable(id, node_id) {
                orders.push(kill_order(&address, id));
                continue;
            }
            orders.extend(self.claim(id, node_id, &address, 0, now));
            let overdue =
                self.jobs
                    .get(id)
                    .and_then(|job| job.stop_sent)
                    .is_some_and(|(sent, grace_ms)| {
                        now.duration_since(sent) > Duration::from_millis(grace_ms) + STOP_PATIENCE
                    });
            if overdue {
                tracing::warn!(
                    job = id,
                    node = node_id,
                    "a stop went unanswered: killing the job"
                );
                orders.extend(self.stop_order(id, 0, now));
            }
        }
        let lost: Vec<String> = self
            .jobs
            .values()
            .filter(|job| {
                job.info.status() == JobStatus::Running
                    && job.info.node_id == node_id
                    && job
                        .running_since
                        .is_some_and(|since| now.duration_since(since) > LISTING_GRACE)
                    && !listed.contains(&job.info.submission_id)
            })
            .map(|job| job.info.submission_id.clone())
            .collect();
        for id in lost {
            let stopping = self
                .jobs
                .get(&id)
                .is_some_and(|job| job.info.stop_requested);
            let status = if stopping {
                JobStatus::Stopped
            } else {
                JobStatus::Failed
            };
            let message = format!(
                "node {node_id} no longer runs the entrypoint and never reported how it ended"
            );
            orders.extend(self.finish_job(&id, status, message, now));
        }
        orders
    }

    /// Fails running jobs that no node has claimed within `patience` of the head's start.
    pub fn fail_unclaimed_jobs(&mut self, now: Instant, patience: Duration) -> Vec<Order> {
        let expired: Vec<String> = self
            .jobs
            .values()
            .filter(|job| {
                job.unclaimed_since
                    .is_some_and(|since| now.duration_since(since) > patience)
            })
            .map(|job| job.info.submission_id.clone())
            .collect();
        let mut orders = Vec::new();
        for id in expired {
            orders.extend(self.finish_job(
                &id,
                JobStatus::Failed,
                format!(
                    "the head restarted and no node reported this job's entrypoint within {} s",
                    patience.as_secs()
                ),
                now,
            ));
        }
        orders
    }

    /// Whether some job waits to be claimed past `patience`.
    pub fn unclaimed_jobs_expired(&self, now: Instant, patience: Duration) -> bool {
        self.jobs.values().any(|job| {
            job.unclaimed_since
                .is_some_and(|since| now.duration_since(since) > patience)
        })
    }
}

/// Kills an entrypoint the head does not want on that node.
fn kill_order(node_address: &str, id: &str) -> Order {
    Order::StopJob {
        node_address: node_address.to_string(),
        order: StopJobOrder {
            submission_id: id.to_string(),
            grace_ms: 0,
        },
    }
}
