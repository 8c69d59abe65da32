//! `ActorRef`: the untyped reference under every typed handle. It knows the actor's id and type,
//! serializes to just those (so handles can be passed to other actors), and finds the cluster
//! client of whatever process it lands in.

use crate::client::Client;
use crate::codec::CodecError;
use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// A reference to one actor, valid in any process of the cluster.
#[derive(Clone)]
pub struct ActorRef {
    id: Arc<str>,
    type_name: Arc<str>,
    client: Option<Arc<Client>>,
}

/// An untyped reference is a handle too: code that watches actors of many types (their state,
/// their restarts) takes them all as `ActorRef`s.
impl crate::actor::ActorHandle for ActorRef {
    fn actor_ref(&self) -> &ActorRef {
        self
    }
}

impl ActorRef {
    pub(crate) fn new(id: &str, type_name: &str, client: Arc<Client>) -> Self {
        ActorRef {
            id: id.into(),
            type_name: type_name.into(),
            client: Some(client),
        }
    }

    /// The actor's cluster-wide id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The actor's type name (module path and type).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    pub(crate) fn client(&self) -> Result<Arc<Client>> {
        match &self.client {
            Some(client) => Ok(client.clone()),
            None => crate::client::current().ok_or(Error::NoCluster),
        }
    }

    /// Sends method `method` (named `method_name`, for errors) with encoded arguments.
    pub async fn call(&self, method: u32, method_name: &str, args: Bytes) -> Result<Bytes> {
        self.client()?.call(self, method, method_name, args).await
    }

    /// Waits until the actor serves calls (its constructor ran), up to `timeout`.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> Result<()> {
        self.client()?.wait_ready(self, timeout).await.map(|_| ())
    }

    #[doc(hidden)]
    pub fn argument_error(&self, method: &str, source: CodecError) -> Error {
        Error::Codec {
            context: format!(
                "encoding the arguments of `{method}` for actor {} ({})",
                self.id, self.type_name
            ),
            source,
        }
    }

    #[doc(hidden)]
    pub fn reply_error(&self, method: &str, source: CodecError) -> Error {
        Error::Codec {
            context: format!(
                "decoding the reply of `{method}` from actor {} ({})",
                self.id, self.type_name
            ),
            source,
        }
    }
}

impl std::fmt::Debug for ActorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRef")
            .field("id", &self.id)
            .field("type_name", &self.type_name)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct WireRef {
    id: String,
    type_name: String,
}

impl Serialize for ActorRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        WireRef {
            id: self.id.to_string(),
            type_name: self.type_name.to_string(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ActorRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let wire = WireRef::deserialize(deserializer)?;
        Ok(ActorRef {
            id: wire.id.into(),
            type_name: wire.type_name.into(),
            client: crate::client::current(),
        })
    }
}
