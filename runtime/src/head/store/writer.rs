//! The writer thread of the head's state: changes are handed over under the state lock (so they
//! reach the disk in the order they happened) and committed as many at a time as have queued up
//! (one fsync for a burst). Callers wait with `durable` before they answer. A failed write stops
//! the writer for good: the head then refuses new work rather than acknowledge what it could
//! lose.

use super::{Change, StateStore};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest `durable` waits for the disk before it reports the wait as an error.
const DURABLE_PATIENCE: Duration = Duration::from_secs(10);

/// Hands changes to the writer thread without waiting for the disk.
pub(crate) struct StateWriter {
    sender: std::sync::mpsc::Sender<(u64, Vec<Change>)>,
    /// Sequence number of the last batch handed over.
    queued: AtomicU64,
    /// Sequence number of the last batch committed.
    committed: tokio::sync::watch::Sender<u64>,
    /// Why writing stopped, once it did.
    failure: Arc<Mutex<Option<String>>>,
}

impl StateWriter {
    /// Moves `store` to a writer thread.
    pub(crate) fn start(store: StateStore) -> Result<StateWriter> {
        let (sender, receiver) = std::sync::mpsc::channel::<(u64, Vec<Change>)>();
        let (committed, _) = tokio::sync::watch::channel(0_u64);
        let report = committed.clone();
        let failure = Arc::new(Mutex::new(None));
        let failure_seen = failure.clone();
        std::thread::Builder::new()
            .name("troupe-head-state".to_string())
            .spawn(move || {
                while let Ok((mut upto, mut batch)) = receiver.recv() {
                    while let Ok((more_upto, more)) = receiver.try_recv() {
                        upto = more_upto;
                        batch.extend(more);
                    }
                    if let Err(err) = store.write(&batch) {
                        tracing::error!(%err, "could not write the head's state: refusing new work from now on");
                        if let Ok(mut failure) = failure_seen.lock() {
                            *failure = Some(err.to_string());
                        }
                        // Wake the waiters: they see the failure.
                        report.send_modify(|_| {});
                        return;
                    }
                    report.send_replace(upto);
                }
            })
            .map_err(|err| Error::io("starting the head's state writer", err))?;
        Ok(StateWriter {
            sender,
            queued: AtomicU64::new(0),
            committed,
            failure,
        })
    }

    /// Queues changes (call under the state lock, so batches keep the order of the changes).
    pub(crate) fn send(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let upto = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if self.sender.send((upto, changes)).is_err() {
            self.fail("the writer thread is gone".to_string());
        }
    }

    /// Why the head can no longer write its state, if it cannot.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|failure| failure.clone())
    }

    pub(super) fn fail(&self, why: String) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(why);
        }
        self.committed.send_modify(|_| {});
    }

    /// Waits until every change queued so far is committed; an error says why it is not.
    pub(crate) async fn durable(&self) -> std::result::Result<(), String> {
        let wanted = self.queued.load(Ordering::SeqCst);
        let mut committed = self.committed.subscribe();
        let reached = tokio::time::timeout(
            DURABLE_PATIENCE,
            committed.wait_for(|done| *done >= wanted || self.failure().is_some()),
        )
        .await;
        if let Some(why) = self.failure() {
            return Err(why);
        }
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the writer thread is gone".to_string()),
            Err(_) => Err(format!(
                "the disk did not take the head's state within {} s",
                DURABLE_PATIENCE.as_secs()
            )),
        }
    }
}
