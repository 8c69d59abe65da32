//! The sync loop of an online run: every period, seal and have every replica catch up, until
//! told to stop, then one last round. It holds the replicas' lock while it works, which is how
//! a re-distribution of rows keeps it out of the way.

use crate::serving::{ServingReplicaHandle, SyncReport};
use crate::trainer::OnlineTrainerHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One replica's sync as the run saw it, with the full copy it replaced.
#[derive(Clone, Debug)]
pub(super) struct SyncSeen {
    pub(super) replica: usize,
    pub(super) report: SyncReport,
    pub(super) full_copy_bytes: u64,
}

pub(super) async fn sync_loop(
    trainer: OnlineTrainerHandle,
    replicas: Arc<tokio::sync::Mutex<Vec<ServingReplicaHandle>>>,
    period: Duration,
    stop: Arc<AtomicBool>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
) -> Vec<SyncSeen> {
    let mut seen = Vec::new();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let last = stop.load(Ordering::Relaxed);
        let replicas = replicas.lock().await;
        match trainer.seal().await {
            Ok(seal) => {
                let full_copy_bytes: u64 = seal.shards.iter().map(|s| s.full_copy_bytes).sum();
                let results = futures::future::join_all(
                    replicas.iter().map(|replica| replica.sync(seal.version)),
                )
                .await;
                for (replica, result) in results.into_iter().enumerate() {
                    match result {
                        Ok(report) if report.live_unix_us > 0 => seen.push(SyncSeen {
                            replica,
                            report,
                            full_copy_bytes,
                        }),
                        Ok(_) => {}
                        Err(err) => errors
                            .lock()
                            .expect("errors")
                            .push(format!("replica {replica}: {err}")),
                    }
                }
            }
            Err(err) => errors.lock().expect("errors").push(format!("seal: {err}")),
        }
        if last {
            break;
        }
    }
    seen
}
