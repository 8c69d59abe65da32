//! The error type of the actor API: every failure a caller can see, each naming the actor,
//! its node and the method involved where those are known.

use crate::codec::CodecError;

/// Result of troupe API calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to the cluster or to an actor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The method panicked in the worker. The worker process exits after a panic and is restarted
    /// if the actor has restarts left.
    #[error("actor {} ({}) on node {}: method `{}` panicked: {}", .0.actor, .0.type_name, .0.node, .0.method, .0.message)]
    Panicked(Box<RemotePanic>),
    /// The method ran and returned an error (a method returning `Result`).
    #[error("actor {actor} ({type_name}) on node {node}: `{method}` failed: {message}")]
    Method {
        actor: String,
        type_name: String,
        node: String,
        method: String,
        message: String,
    },
    /// The worker process went away while the call was in flight.
    #[error("actor {} ({}) on node {} died during `{}`: {}; {}", .0.actor, .0.type_name, .0.node, .0.method, .0.reason, restart_note(.0.restarting))]
    Died(Box<ActorDeath>),
    /// The actor is dead for good (killed, out of restarts, or its constructor failed).
    #[error("actor {actor} ({type_name}) is dead: {reason}")]
    Dead {
        actor: String,
        type_name: String,
        reason: String,
    },
    /// The actor did not become ready in time.
    #[error("actor {actor} ({type_name}) not ready after {waited_ms} ms: {detail}")]
    NotReady {
        actor: String,
        type_name: String,
        waited_ms: u64,
        detail: String,
    },
    /// The worker could not decode the arguments or does not know the method.
    #[error("actor {actor} ({type_name}) on node {node} rejected `{method}`: {message}")]
    Rejected {
        actor: String,
        type_name: String,
        node: String,
        method: String,
        message: String,
    },
    /// Encoding or decoding a value failed.
    #[error("{context}: {source}")]
    Codec {
        context: String,
        #[source]
        source: CodecError,
    },
    /// The head or a node refused a request or could not be reached.
    #[error("{context}: {status_message} ({code:?})")]
    Rpc {
        context: String,
        code: tonic::Code,
        status_message: String,
    },
    /// A spawn option or argument is invalid.
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
    /// A batch operation failed (mismatched columns, bad bytes, ...).
    #[error("batch: {0}")]
    Batch(#[from] crate::data::BatchError),
    /// The process has no cluster to talk to.
    #[error("no troupe cluster in this process: create one with Cluster::local() or Cluster::connect(addr) first")]
    NoCluster,
    /// Local I/O failed (starting the embedded cluster, reading the executable, ...).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A panic in an actor method, as the caller sees it.
#[derive(Debug, Clone)]
pub struct RemotePanic {
    pub actor: String,
    pub type_name: String,
    pub node: String,
    pub method: String,
    pub message: String,
    /// The worker's backtrace at the panic.
    pub backtrace: String,
}

/// A worker that went away during a call.
#[derive(Debug, Clone)]
pub struct ActorDeath {
    pub actor: String,
    pub type_name: String,
    pub node: String,
    pub method: String,
    pub reason: String,
    /// Whether the head is starting a new worker for the actor.
    pub restarting: bool,
}

fn restart_note(restarting: bool) -> &'static str {
    if restarting {
        "it is restarting"
    } else {
        "it will not restart"
    }
}

impl Error {
    /// Wraps a gRPC status with what was being attempted.
    pub fn rpc(context: impl Into<String>, status: tonic::Status) -> Self {
        Error::Rpc {
            context: context.into(),
            code: status.code(),
            status_message: status.message().to_string(),
        }
    }

    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code, for errors that came from a gRPC status.
    pub fn rpc_code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the actor will be back (a restart is coming).
    pub fn is_restarting(&self) -> bool {
        matches!(self, Error::Died(death) if death.restarting)
    }
}
