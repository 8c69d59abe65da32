//! What an actor is to the runtime: the `Actor` trait that `#[troupe::actor]` implements, typed
//! handles and the untyped `ActorRef` under them, spawn options, and the registry through which
//! a worker process constructs an actor by type name.

mod actor_ref;
pub(crate) mod blocking;
mod group;
mod options;
pub(crate) mod registry;

pub use actor_ref::ActorRef;
pub use group::ActorGroup;
pub use options::SpawnOptions;
pub use registry::{ActorFactory, DispatchError, HostedActor};

use bytes::Bytes;
use std::sync::Arc;

/// A boxed, sendable future, as the generated dispatch code returns.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// A type whose instances live in worker processes. Implemented by `#[troupe::actor]`; not meant
/// to be implemented by hand.
pub trait Actor: Send + Sync + Sized + 'static {
    /// The typed handle that callers hold.
    type Handle: ActorHandle + From<ActorRef>;
    /// Cluster-wide name of the type: module path and type name.
    const TYPE_NAME: &'static str;
    /// Exported method names, by method index.
    const METHODS: &'static [&'static str];

    /// Runs method number `method` with encoded arguments and returns the encoded reply.
    fn dispatch(
        cell: Arc<tokio::sync::RwLock<Self>>,
        method: u32,
        args: Bytes,
    ) -> BoxFuture<Result<Bytes, DispatchError>>;
}

/// Implemented by every generated handle type.
pub trait ActorHandle: Clone + Send + Sync + 'static {
    fn actor_ref(&self) -> &ActorRef;
}
