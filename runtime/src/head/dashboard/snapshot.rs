//! The cluster view every cluster page and `/api/status` shows, computed at most once per
//! `MAX_AGE` and shared by all requests: building it takes the head's state lock for the status
//! view (trial placements of the pending demand, a scan of nodes × GPUs × actors), so it runs on
//! a blocking thread, and requests that arrive while it runs wait for that one computation
//! instead of starting their own. N open tabs cost one computation per `MAX_AGE`, not N.

use super::gpu_map::JobGpus;
use super::views::ClusterView;
use crate::head::Head;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe_proto::ClusterStatusReply;

/// How long a computed view is served before the next request computes a new one.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// The latest view and when it was computed.
#[derive(Default)]
pub(crate) struct ViewCache {
    latest: tokio::sync::Mutex<Option<(Instant, Arc<ClusterView>)>>,
}

impl ViewCache {
    /// The cluster view, at most `MAX_AGE` old; `None` when computing it failed (a bug, logged).
    pub(crate) async fn get(&self, head: &Arc<Head>) -> Option<Arc<ClusterView>> {
        // Held across the computation: the requests queued behind it get its result.
        let mut latest = self.latest.lock().await;
        if let Some((at, view)) = latest.as_ref() {
            if at.elapsed() < MAX_AGE {
                return Some(view.clone());
            }
        }
        let head = head.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let (status, jobs) = status_and_job_gpus(&head);
            ClusterView::of(&status, &jobs)
        })
        .await;
        match computed {
            Ok(view) => {
                let view = Arc::new(view);
                *latest = Some((Instant::now(), view.clone()));
                Some(view)
            }
            Err(err) => {
                tracing::error!(error = %err, "the dashboard could not build the status view");
                None
            }
        }
    }
}

/// The status view (as `troupe status` gets it, with the autoscaler's part) and the GPUs each
/// running job was given, read under one hold of the state lock.
fn status_and_job_gpus(head: &Head) -> (ClusterStatusReply, Vec<JobGpus>) {
    let (mut status, jobs) = head.inspect(|state| {
        let jobs: Vec<JobGpus> = state
            .jobs
            .values()
            .filter_map(|job| {
                let allocation = job.allocation.as_ref()?;
                (!allocation.gpus.is_empty()).then(|| JobGpus {
                    id: job.info.submission_id.clone(),
                    node_id: allocation.node_id.clone(),
                    gpus: allocation.gpus.iter().map(|share| share.index).collect(),
                })
            })
            .collect();
        (crate::head::metrics::status_of(state), jobs)
    });
    status.autoscaler = head.autoscaler.as_ref().map(|a| a.status());
    (status, jobs)
}
