//! The worker's gRPC service: reads calls from each caller's stream, runs them on the actor (at
//! most `max_concurrency` at once, admitted in arrival order), and writes replies back. A panic
//! in a method becomes a failure reply carrying the message and backtrace; then the process
//! exits, so the actor restarts from a clean constructor rather than from half-updated state.

use super::introspect::{self, Inflight};
use super::panics;
use crate::actor::HostedActor;
use crate::timeline::{Recorded, SpanKind, StepTag};
use futures::FutureExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use troupe_proto::worker_server::{Worker, WorkerServer};
use troupe_proto::{
    reply_frame, CallFailure, CallFrame, Empty, FailureKind, InspectReply, InspectRequest,
    ReplyFrame, TimelineReply, TimelineRequest,
};

/// How long an object stream waits for its reader to take the next chunk before giving up.
const FETCH_STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long a worker lingers after a panic so the failure reply reaches the caller.
const PANIC_EXIT_DELAY: Duration = Duration::from_millis(100);

/// Which actor incarnation a worker serves, for its spans and its log lines.
pub(super) struct Identity {
    pub actor_id: String,
    pub incarnation: u64,
    pub node_id: String,
}

pub(super) struct WorkerContext {
    actor: Box<dyn HostedActor>,
    admission: Arc<Semaphore>,
    max_concurrency: u32,
    served: AtomicU64,
    panicked: AtomicBool,
    inflight: Inflight,
    identity: Identity,
}

impl WorkerContext {
    pub(super) fn new(
        actor: Box<dyn HostedActor>,
        max_concurrency: u32,
        identity: Identity,
    ) -> Self {
        WorkerContext {
            actor,
            admission: Arc::new(Semaphore::new(max_concurrency as usize)),
            max_concurrency,
            served: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            inflight: Inflight::default(),
            identity,
        }
    }

    pub(super) fn calls_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

pub(super) async fn serve(
    context: Arc<WorkerContext>,
    listener: tokio::net::TcpListener,
    token: crate::rpc::Token,
) {
    let incoming = crate::rpc::incoming(listener);
    let limit = crate::rpc::MAX_MESSAGE_BYTES;
    let service = WorkerServer::new(WorkerService(context))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(crate::rpc::auth::RequireToken::new(&token, "worker"))
        .add_service(service)
        .serve_with_incoming(incoming)
        .await;
    if let Err(err) = result {
        tracing::error!(%err, "worker server stopped");
    }
}

struct WorkerService(Arc<WorkerContext>);

/// Calls one stream may have read and waiting for a slot, and their argument bytes; past either
/// the stream is not read (HTTP/2 flow control holds the caller back).
const MAX_BACKLOG: usize = 1024;
const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// The next call frame of a stream, or `None` once it ended.
async fn next_frame(calls: &mut Streaming<CallFrame>) -> Option<CallFrame> {
    match calls.message().await {
        Ok(Some(frame)) => {
            crate::transport::keep_awake::note_activity();
            Some(frame)
        }
        Ok(None) => None,
        Err(status) => {
            tracing::debug!(message = status.message(), "call stream ended");
            None
        }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type CallStream = ReceiverStream<Result<ReplyFrame, Status>>;

    async fn call(
        &self,
        request: Request<Streaming<CallFrame>>,
    ) -> Result<Response<Self::CallStream>, Status> {
        let caller: Arc<str> = request
            .metadata()
            .get(crate::transport::CALLER_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("unknown")
            .into();
        let mut calls = request.into_inner();
        let (replies, outgoing) = mpsc::channel(1024);
        let context = self.0.clone();
        tokio::spawn(async move {
            // Calls read but not yet admitted, in arrival order: `troupe calls` counts them.
            let mut backlog = VecDeque::new();
            let mut backlog_bytes = 0usize;
            // The caller stopped sending; what it sent still runs.
            let mut ended = false;
            let start = |frame: CallFrame, permit: OwnedSemaphorePermit| {
                let context = context.clone();
                let replies = replies.clone();
                let caller = caller.clone();
                tokio::spawn(async move {
                    let reply = run_call(&context, frame, caller).await;
                    drop(permit);
                    crate::transport::keep_awake::note_activity();
                    let _ = replies.send(Ok(reply)).await;
                });
            };
            loop {
                if backlog.is_empty() {
                    if ended {
                        break;
                    }
                    let Some(frame) = next_frame(&mut calls).await else {
                        break;
                    };
                    // Admission in arrival order: with max_concurrency 1, calls run one by one.
                    match context.admission.clone().try_acquire_owned() {
                        Ok(permit) => start(frame, permit),
                        Err(_) => {
                            backlog_bytes += frame.args.len();
                            backlog.push_back((frame, context.inflight.queued()));
                        }
                    }
                    continue;
                }
                let read_more =
                    !ended && backlog.len() < MAX_BACKLOG && backlog_bytes < MAX_BACKLOG_BYTES;
                tokio::select! {
                    biased;
                    permit = context.admission.clone().acquire_owned() => {
                        let Ok(permit) = permit else { break };
                        if let Some((frame, waiting)) = backlog.pop_front() {
                            drop(waiting);
                            backlog_bytes -= frame.args.len();
                            start(frame, permit);
                        }
                    }
                    frame = next_frame(&mut calls), if read_more => match frame {
                        Some(frame) => {
                            backlog_bytes += frame.args.len();
                            backlog.push_back((frame, context.inflight.queued()));
                        }
                        None => ended = true,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outgoing)))
    }

    async fn ping(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    type FetchObjectStream = ReceiverStream<Result<troupe_proto::ObjectChunk, Status>>;

    async fn fetch_object(
        &self,
        request: Request<troupe_proto::ObjectId>,
    ) -> Result<Response<Self::FetchObjectStream>, Status> {
        let id = request.into_inner().id;
        crate::rpc::check_id("id", &id)?;
        let bytes = crate::objects::local(&id)
            .ok_or_else(|| Status::not_found(format!("this worker holds no object {id}")))?;
        let (chunks, outgoing) = mpsc::channel(4);
        tokio::spawn(async move {
            for start in (0..bytes.len().max(1)).step_by(crate::objects::CHUNK_BYTES) {
                let end = (start + crate::objects::CHUNK_BYTES).min(bytes.len());
                let chunk = troupe_proto::ObjectChunk {
                    data: bytes.slice(start..end),
                };
                // A reader that stops reading must not pin the object for ever.
                let sent = tokio::time::timeout(FETCH_STALL_LIMIT, chunks.send(Ok(chunk))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outgoing)))
    }

    async fn release_object(
        &self,
        request: Request<troupe_proto::ObjectId>,
    ) -> Result<Response<Empty>, Status> {
        let id = request.into_inner().id;
        crate::rpc::check_id("id", &id)?;
        if !crate::objects::remove(&id) {
            return Err(Status::not_found(format!(
                "this worker holds no object {id}"
            )));
        }
        Ok(Response::new(Empty {}))
    }

    async fn inspect(
        &self,
        request: Request<InspectRequest>,
    ) -> Result<Response<InspectReply>, Status> {
        let context = &self.0;
        let (calls, queued) = context.inflight.snapshot();
        let (threads, backtrace_note) = if request.into_inner().backtraces {
            introspect::thread_stacks().await
        } else {
            (Vec::new(), String::new())
        };
        Ok(Response::new(InspectReply {
            pid: std::process::id(),
            calls,
            queued,
            max_concurrency: context.max_concurrency,
            served: context.calls_served(),
            threads,
            backtrace_note,
        }))
    }

    async fn timeline(
        &self,
        request: Request<TimelineRequest>,
    ) -> Result<Response<TimelineReply>, Status> {
        let request = request.into_inner();
        let identity = &self.0.identity;
        let (spans, dropped) =
            crate::timeline::recorder().between(request.since_unix_us, request.until_unix_us);
        let spans = crate::timeline::to_wire(
            spans,
            &identity.actor_id,
            identity.incarnation,
            &identity.node_id,
        );
        Ok(Response::new(TimelineReply { spans, dropped }))
    }
}

async fn run_call(context: &Arc<WorkerContext>, frame: CallFrame, caller: Arc<str>) -> ReplyFrame {
    let method_name = context
        .actor
        .method_name(frame.method)
        .unwrap_or("?")
        .to_string();
    let tag = StepTag {
        step: frame.step,
        weight_version: frame.weight_version,
    };
    let method: Arc<str> = Arc::from(method_name.as_str());
    let bytes_in = frame.args.len() as u64;
    let started_unix_us = crate::timeline::unix_us_now();
    let started = Instant::now();
    let running = context
        .inflight
        .begin(frame.call_id, method.clone(), caller.clone(), tag);
    let reply = run_method(context, frame, method_name, tag).await;
    drop(running);
    let recorder = crate::timeline::recorder();
    if recorder.enabled() {
        let (bytes_out, failed) = match &reply.outcome {
            Some(reply_frame::Outcome::Ok(bytes)) => (bytes.len() as u64, false),
            _ => (0, true),
        };
        recorder.record(Recorded {
            kind: SpanKind::Call,
            name: method,
            start_unix_us: started_unix_us,
            duration_us: started.elapsed().as_micros() as u64,
            tag,
            bytes_in,
            bytes_out,
            caller,
            failed,
            group: None,
        });
    }
    reply
}

async fn run_method(
    context: &Arc<WorkerContext>,
    frame: CallFrame,
    method_name: String,
    tag: StepTag,
) -> ReplyFrame {
    if context.panicked.load(Ordering::SeqCst) {
        // The actor's state may be half-updated: no call runs on it any more.
        return ReplyFrame {
            call_id: frame.call_id,
            outcome: Some(reply_frame::Outcome::Failed(CallFailure {
                kind: FailureKind::Exiting as i32,
                message: "the worker is exiting after a panic".to_string(),
                backtrace: String::new(),
                method: method_name,
            })),
        };
    }
    let call = std::panic::AssertUnwindSafe(context.actor.call(frame.method, frame.args));
    // Calls the method makes carry its step on.
    let outcome = crate::timeline::with_step(tag, call.catch_unwind()).await;
    context.served.fetch_add(1, Ordering::Relaxed);
    let outcome = match outcome {
        Ok(Ok(bytes)) => reply_frame::Outcome::Ok(bytes),
        Ok(Err(failure)) => reply_frame::Outcome::Failed(CallFailure {
            kind: failure.kind as i32,
            message: failure.message,
            backtrace: String::new(),
            method: failure.method,
        }),
        Err(payload) => {
            let (mut message, backtrace) = match panics::take_last() {
                Some(recorded) => recorded,
                None => (panics::message(&payload), String::new()),
            };
            if message.contains("from within a runtime") {
                message.push_str(
                    " (a sync actor method that was fast last time runs on the worker's async \
                     runtime, where blocking on async code is not allowed: make the method \
                     `async` and `.await` instead)",
                );
            }
            tracing::error!(method = method_name, %message, "actor method panicked; the worker will exit");
            schedule_exit_after_panic(context, &method_name);
            reply_frame::Outcome::Failed(CallFailure {
                kind: FailureKind::Panic as i32,
                message,
                backtrace,
                method: method_name,
            })
        }
    };
    ReplyFrame {
        call_id: frame.call_id,
        outcome: Some(outcome),
    }
}

fn schedule_exit_after_panic(context: &Arc<WorkerContext>, method: &str) {
    if context.panicked.swap(true, Ordering::SeqCst) {
        return;
    }
    let description = format!(
        "{} on node {}",
        context.identity.actor_id, context.identity.node_id
    );
    let method = method.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(PANIC_EXIT_DELAY).await;
        eprintln!("troupe worker {description}: exiting after a panic in `{method}`");
        std::process::exit(101);
    });
}
