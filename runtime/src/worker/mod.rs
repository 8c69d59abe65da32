//! The worker: the process a node agent starts for one actor. It is the driver's own executable
//! started again (`troupe::init()` notices the worker environment and never returns): it asks
//! the head what to construct, runs the constructor, serves the actor's calls, and exits when its
//! node agent goes away or a method panics.

mod introspect;
pub use introspect::measure_call_bookkeeping;
mod panics;
mod server;
pub(crate) mod stacks;

use crate::client::Client;
use crate::node::service_env as env;
use std::sync::Arc;
use std::time::Duration;
use troupe_proto::actors_client::ActorsClient;
use troupe_proto::{GetActorSpecRequest, WorkerReadyRequest};

/// Whether this process was started as a worker.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(env::ACTOR_ID).is_some()
}

/// Runs the worker to completion and returns the process exit code.
pub(crate) fn run_to_exit() -> i32 {
    // At least two: one can be inside a long method while the other answers keep-alives.
    let threads = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(1)
        .max(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("troupe-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("troupe worker: cannot start the async runtime: {err}");
            return 70;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("troupe worker: {err}");
            tracing::error!(%err, "worker failed");
            1
        }
    }
}

/// Why a worker gave up; printed to its log before it exits with status 1.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("the environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error("the environment variable {name} is `{value}`, not a number")]
    BadEnv { name: &'static str, value: String },
    #[error(transparent)]
    Token(#[from] crate::rpc::auth::TokenError),
    #[error(transparent)]
    Runtime(Box<crate::Error>),
    #[error("{what}: {message}")]
    Head { what: &'static str, message: String },
    #[error("constructing {type_name}: {why}")]
    Construct { type_name: String, why: String },
    #[error("binding the worker's port: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server task failed: {0}")]
    Serve(#[from] tokio::task::JoinError),
}

impl From<crate::Error> for WorkerError {
    fn from(err: crate::Error) -> Self {
        WorkerError::Runtime(Box::new(err))
    }
}

fn required(name: &'static str) -> Result<String, WorkerError> {
    std::env::var(name).map_err(|_| WorkerError::MissingEnv(name))
}

/// The head's refusal of `what`, as a worker error.
fn head_refused(what: &'static str) -> impl FnOnce(tonic::Status) -> WorkerError {
    move |status| WorkerError::Head {
        what,
        message: status.message().to_string(),
    }
}

async fn run() -> Result<(), WorkerError> {
    panics::install_hook();
    watch_parent();
    let actor_id = required(env::ACTOR_ID)?;
    let incarnation = required(env::INCARNATION)?;
    let incarnation: u64 = incarnation.parse().map_err(|_| WorkerError::BadEnv {
        name: env::INCARNATION,
        value: incarnation.clone(),
    })?;
    let head_address = required(env::HEAD_ADDRESS)?;
    let bind_host = std::env::var(env::BIND_HOST).unwrap_or_else(|_| "127.0.0.1".to_string());
    let binary_hash = std::env::var(env::BINARY_HASH).unwrap_or_default();
    let node_id = std::env::var(env::NODE_ID).unwrap_or_default();

    // Actors this one spawns are owned by this worker: they stop when it goes.
    let session = format!("worker-{actor_id}-{incarnation}");
    let token = crate::rpc::Token::from_env()?;
    let client = Client::connect(&head_address, token, session, binary_hash, Vec::new()).await?;
    client.open_session().await?;
    crate::client::set_current(&client);
    let actors: ActorsClient<_> = client.actors.clone();
    let spec = crate::rpc::while_head_unavailable(
        "asking the head what to run",
        crate::rpc::HEAD_OUTAGE_PATIENCE,
        crate::rpc::Resend::Idempotent,
        || {
            let mut actors = actors.clone();
            let request = GetActorSpecRequest {
                actor_id: actor_id.clone(),
                incarnation,
            };
            async move { actors.get_actor_spec(request).await }
        },
    )
    .await
    .map_err(head_refused("asking the head what to run"))?
    .into_inner();

    let constructed = construct(&spec).await;
    let actor = match constructed {
        Ok(actor) => actor,
        Err(why) => {
            let report = WorkerReadyRequest {
                actor_id: actor_id.clone(),
                incarnation,
                constructor_error: why.clone(),
                ..WorkerReadyRequest::default()
            };
            let _ = report_ready(&actors, report).await;
            return Err(WorkerError::Construct {
                type_name: spec.type_name.clone(),
                why,
            });
        }
    };
    let listener = tokio::net::TcpListener::bind((bind_host.as_str(), 0)).await?;
    let address = format!("{bind_host}:{}", listener.local_addr()?.port());
    crate::objects::set_own_address(&address);
    let context = Arc::new(server::WorkerContext::new(
        actor,
        spec.max_concurrency.max(1),
        server::Identity {
            actor_id: actor_id.clone(),
            incarnation,
            node_id: node_id.clone(),
        },
    ));
    let serving = tokio::spawn(server::serve(
        context.clone(),
        listener,
        client.token.clone(),
    ));
    report_ready(
        &actors,
        WorkerReadyRequest {
            actor_id: actor_id.clone(),
            incarnation,
            worker_address: address.clone(),
            pid: std::process::id(),
            constructor_error: String::new(),
        },
    )
    .await
    .map_err(head_refused("reporting ready to the head"))?;
    tracing::info!(actor = actor_id, %address, "worker serving");
    tokio::spawn(report_calls(client.clone(), actor_id, context));
    serving.await?;
    Ok(())
}

/// Tells the head the worker is ready (or could not construct its actor), waiting for a head
/// that is restarting.
async fn report_ready(
    actors: &ActorsClient<crate::rpc::AuthChannel>,
    report: WorkerReadyRequest,
) -> Result<(), tonic::Status> {
    crate::rpc::while_head_unavailable(
        "reporting ready to the head",
        crate::rpc::HEAD_OUTAGE_PATIENCE,
        crate::rpc::Resend::Idempotent,
        || {
            let mut actors = actors.clone();
            let report = report.clone();
            async move { actors.worker_ready(report).await }
        },
    )
    .await
    .map(|_| ())
}

async fn construct(
    spec: &troupe_proto::ActorSpec,
) -> Result<Box<dyn crate::actor::HostedActor>, String> {
    let Some(factory) = crate::actor::registry::find_factory(&spec.type_name) else {
        return Err(format!(
            "this executable has no actor type `{}` (it has: {})",
            spec.type_name,
            crate::actor::registry::known_types().join(", ")
        ));
    };
    let construct = (factory.construct)(spec.constructor_args.clone());
    match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(construct)).await {
        Ok(result) => result,
        Err(payload) => Err(format!(
            "the constructor panicked: {}",
            panics::message(&payload)
        )),
    }
}

/// Exits when the node agent that started this worker is gone (belt and braces with the
/// parent-death signal the agent sets).
fn watch_parent() {
    // SAFETY: getppid(2) has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::Builder::new()
        .name("troupe-parent-watch".to_string())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: as above.
            if unsafe { libc::getppid() } != parent {
                eprintln!("troupe worker: the node agent is gone; exiting");
                std::process::exit(2);
            }
        })
        .ok();
}

/// Tells the head how many calls this worker served, every second it served any.
async fn report_calls(client: Arc<Client>, actor_id: String, context: Arc<server::WorkerContext>) {
    let mut reported = 0_u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let served = context.calls_served();
        if served == reported {
            continue;
        }
        let mut actors = client.actors.clone();
        let stats = troupe_proto::CallStats {
            actor_id: actor_id.clone(),
            calls_delta: served - reported,
        };
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), actors.report_calls(stats)).await
        {
            reported = served;
        }
    }
}
