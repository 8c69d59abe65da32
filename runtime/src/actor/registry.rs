//! The registry of actor types compiled into this executable. `#[troupe::actor]` submits one
//! `ActorFactory` per type (through `inventory`), so a worker process — the driver's own binary
//! started again — can construct any actor the driver asks for by its type name.

use super::{Actor, BoxFuture};
use bytes::Bytes;
use std::sync::Arc;
use troupe_proto::FailureKind;

/// Builds an actor from its encoded constructor arguments (the error is the constructor's).
pub type Constructor = fn(Bytes) -> BoxFuture<Result<Box<dyn HostedActor>, String>>;

/// How to construct one actor type from encoded constructor arguments.
pub struct ActorFactory {
    pub type_name: &'static str,
    pub construct: Constructor,
}

inventory::collect!(ActorFactory);

/// Finds the factory for `type_name` in this executable.
pub(crate) fn find_factory(type_name: &str) -> Option<&'static ActorFactory> {
    inventory::iter::<ActorFactory>
        .into_iter()
        .find(|factory| factory.type_name == type_name)
}

/// The actor types this executable can host, for error messages.
pub(crate) fn known_types() -> Vec<&'static str> {
    inventory::iter::<ActorFactory>
        .into_iter()
        .map(|factory| factory.type_name)
        .collect()
}

/// A constructed actor, type-erased, as the worker serves it.
pub trait HostedActor: Send + Sync {
    fn type_name(&self) -> &'static str;
    fn method_name(&self, method: u32) -> Option<&'static str>;
    fn call(&self, method: u32, args: Bytes) -> BoxFuture<Result<Bytes, DispatchError>>;
}

struct Hosted<A: Actor> {
    cell: Arc<tokio::sync::RwLock<A>>,
}

impl<A: Actor> HostedActor for Hosted<A> {
    fn type_name(&self) -> &'static str {
        A::TYPE_NAME
    }

    fn method_name(&self, method: u32) -> Option<&'static str> {
        A::METHODS.get(method as usize).copied()
    }

    fn call(&self, method: u32, args: Bytes) -> BoxFuture<Result<Bytes, DispatchError>> {
        A::dispatch(self.cell.clone(), method, args)
    }
}

/// Wraps a constructed actor for serving.
pub fn host<A: Actor>(actor: A) -> Box<dyn HostedActor> {
    Box::new(Hosted {
        cell: Arc::new(tokio::sync::RwLock::new(actor)),
    })
}

/// A call the worker could not run.
#[derive(Debug, Clone)]
pub struct DispatchError {
    pub kind: FailureKind,
    pub method: String,
    pub message: String,
}

impl DispatchError {
    pub fn bad_arguments(method: &str, err: crate::codec::CodecError) -> Self {
        DispatchError {
            kind: FailureKind::BadArguments,
            method: method.to_string(),
            message: format!("could not decode the arguments: {err}"),
        }
    }

    pub fn bad_reply(method: &str, err: crate::codec::CodecError) -> Self {
        DispatchError {
            kind: FailureKind::BadArguments,
            method: method.to_string(),
            message: format!("could not encode the reply: {err}"),
        }
    }

    /// The method ran and returned an error.
    pub fn application(method: &str, message: String) -> Self {
        DispatchError {
            kind: FailureKind::Application,
            method: method.to_string(),
            message,
        }
    }

    pub fn unknown_method(method: u32) -> Self {
        DispatchError {
            kind: FailureKind::UnknownMethod,
            method: format!("#{method}"),
            message: format!("no method number {method} on this actor (was the driver built from the same source?)"),
        }
    }
}
