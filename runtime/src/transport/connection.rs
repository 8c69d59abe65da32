//! One call stream to one worker process. Any number of tasks may call through it at once;
//! a reader task routes each reply to its caller. When the stream breaks (the worker died),
//! every call still waiting fails with the reason at once.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use troupe_proto::worker_client::WorkerClient;
use troupe_proto::{reply_frame, CallFailure, CallFrame};

/// The stream to the worker is gone, or never came up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LinkError(pub String);

/// What the worker answered.
pub(crate) enum CallOutcome {
    Ok(Bytes),
    Failed(CallFailure),
}

type Waiter = oneshot::Sender<Result<CallOutcome, LinkError>>;

/// Reply bytes this process has received from workers.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Argument bytes this process has sent in actor calls.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Reply bytes this process has received from actor calls (for accounting and tests).
pub fn bytes_received() -> u64 {
    RECEIVED.load(Ordering::Relaxed)
}

/// Argument bytes this process has sent in actor calls (for accounting: what a driver carries).
pub fn bytes_sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set once the stream is gone: no new call may register.
    closed: Option<String>,
}

/// A pipelined call stream to one worker.
pub(crate) struct Connection {
    frames: mpsc::Sender<CallFrame>,
    pending: Arc<Mutex<Pending>>,
    next_call_id: AtomicU64,
}

impl Connection {
    /// Opens the stream to the worker at `address` (host:port).
    /// `caller` (the caller's session) is shown by the worker for the calls in flight.
    pub(crate) async fn open(
        address: &str,
        token: &crate::rpc::Token,
        caller: &str,
    ) -> Result<Arc<Connection>, LinkError> {
        let channel = crate::rpc::connect(address, token)
            .await
            .map_err(|err| LinkError(format!("cannot reach the worker at {address}: {err}")))?;
        let mut client = WorkerClient::new(channel)
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let (frames, outgoing) = mpsc::channel(1024);
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        if let Ok(value) = caller.parse() {
            request.metadata_mut().insert(super::CALLER_HEADER, value);
        }
        let opening = client.call(request);
        let replies = tokio::time::timeout(crate::rpc::CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| {
                LinkError(format!(
                    "the worker at {address} did not open the call stream within 5 s"
                ))
            })?
            .map_err(|status| {
                LinkError(format!(
                    "the worker at {address} refused the call stream: {}",
                    status.message()
                ))
            })?
            .into_inner();
        let pending = Arc::new(Mutex::new(Pending {
            waiters: HashMap::new(),
            closed: None,
        }));
        tokio::spawn(read_replies(replies, pending.clone(), address.to_string()));
        Ok(Arc::new(Connection {
            frames,
            pending,
            next_call_id: AtomicU64::new(1),
        }))
    }

    /// Whether the stream is known to be gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.pending
            .lock()
            .map(|pending| pending.closed.is_some())
            .unwrap_or(true)
    }

    /// Sends one call and waits for its reply.
    pub(crate) async fn call(&self, method: u32, args: Bytes) -> Result<CallOutcome, LinkError> {
        super::keep_awake::note_activity();
        let call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| LinkError("call table poisoned".to_string()))?;
            if let Some(reason) = &pending.closed {
                return Err(LinkError(reason.clone()));
            }
            pending.waiters.insert(call_id, waiter);
        }
        SENT.fetch_add(args.len() as u64, Ordering::Relaxed);
        let tag = crate::timeline::current_step();
        let frame = CallFrame {
            call_id,
            method,
            args,
            step: tag.step,
            weight_version: tag.weight_version,
        };
        if self.frames.send(frame).await.is_err() {
            self.forget(call_id);
            return Err(LinkError("the call stream is closed".to_string()));
        }
        match reply.await {
            Ok(outcome) => outcome,
            Err(_) => Err(LinkError("the call stream dropped the call".to_string())),
        }
    }

    fn forget(&self, call_id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.waiters.remove(&call_id);
        }
    }
}

async fn read_replies(
    mut replies: tonic::Streaming<troupe_proto::ReplyFrame>,
    pending: Arc<Mutex<Pending>>,
    address: String,
) {
    let reason = loop {
        match replies.message().await {
            Ok(Some(frame)) => {
                let waiter = pending
                    .lock()
                    .ok()
                    .and_then(|mut pending| pending.waiters.remove(&frame.call_id));
                let Some(waiter) = waiter else {
                    tracing::warn!(call_id = frame.call_id, %address, "reply for an unknown call");
                    continue;
                };
                let outcome = match frame.outcome {
                    Some(reply_frame::Outcome::Ok(bytes)) => {
                        RECEIVED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        CallOutcome::Ok(bytes)
                    }
                    Some(reply_frame::Outcome::Failed(failure)) => CallOutcome::Failed(failure),
                    None => CallOutcome::Failed(CallFailure {
                        message: "the worker sent a reply with no outcome".to_string(),
                        ..CallFailure::default()
                    }),
                };
                let _ = waiter.send(Ok(outcome));
            }
            Ok(None) => break format!("the worker at {address} closed the call stream"),
            Err(status) => {
                break format!(
                    "the call stream to the worker at {address} broke: {}",
                    status.message()
                )
            }
        }
    };
    let waiters = match pending.lock() {
        Ok(mut pending) => {
            pending.closed = Some(reason.clone());
            std::mem::take(&mut pending.waiters)
        }
        Err(_) => HashMap::new(),
    };
    for (_, waiter) in waiters {
        let _ = waiter.send(Err(LinkError(reason.clone())));
    }
}
