//! The per-process client of a cluster: gRPC clients to the head, the driver session that keeps
//! owned actors alive, the executable that hosts this process's actor types, and the call path
//! to actors (routes to workers, cached, re-resolved after a death).

mod calls;

use crate::error::{Error, Result};
use crate::rpc::{AuthChannel, Token};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use troupe_proto::actors_client::ActorsClient;
use troupe_proto::cluster_client::ClusterClient;
use troupe_proto::SessionPing;

pub(crate) use calls::{Dying, Route};

/// The stream to one worker address, opened at most once at a time.
type ConnectionSlot = Arc<tokio::sync::Mutex<Option<Arc<crate::transport::Connection>>>>;

static CURRENT: RwLock<Option<Arc<Client>>> = RwLock::new(None);

/// The client of this process, if a cluster was created or connected (or this is a worker).
pub(crate) fn current() -> Option<Arc<Client>> {
    CURRENT.read().ok().and_then(|current| current.clone())
}

/// Makes `client` the one that deserialized handles use.
pub(crate) fn set_current(client: &Arc<Client>) {
    if let Ok(mut current) = CURRENT.write() {
        *current = Some(client.clone());
    }
}

/// Forgets `client` as the current one, if it is.
pub(crate) fn clear_current(client: &Arc<Client>) {
    if let Ok(mut current) = CURRENT.write() {
        if current
            .as_ref()
            .is_some_and(|existing| Arc::ptr_eq(existing, client))
        {
            *current = None;
        }
    }
}

/// How long a call waits for its actor to come up (placed, constructed) before failing.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A process's connection to one cluster.
pub(crate) struct Client {
    pub(crate) head_address: String,
    pub(crate) actors: ActorsClient<AuthChannel>,
    pub(crate) cluster: ClusterClient<AuthChannel>,
    /// The cluster token every RPC carries (to the head and to workers).
    pub(crate) token: Token,
    /// The job this process belongs to (`TROUPE_JOB_ID`), if any: its actors are tagged with it.
    pub(crate) job_id: String,
    pub(crate) session_id: String,
    /// Hash of the executable that hosts this process's actor types, as the nodes know it.
    pub(crate) binary_hash: String,
    pub(crate) worker_args: Vec<String>,
    pub(crate) ready_timeout: Duration,
    routes: Mutex<HashMap<String, Arc<Route>>>,
    /// One lookup at a time per actor: a burst of first calls waits for the first one's route
    /// instead of sending the head one lookup each.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    dying: Mutex<Dying>,
    connections: Mutex<HashMap<String, ConnectionSlot>>,
    /// Dropping this ends the session stream, which stops the session's non-detached actors.
    session_keepalive: Mutex<Option<mpsc::Sender<SessionPing>>>,
}

impl Client {
    /// Connects to the head at `head_address` (checks it answers).
    pub(crate) async fn connect(
        head_address: &str,
        token: Token,
        session_id: String,
        binary_hash: String,
        worker_args: Vec<String>,
    ) -> Result<Arc<Client>> {
        let channel = crate::rpc::connect(head_address, &token)
            .await
            .map_err(|why| Error::Invalid {
                what: "cluster address".to_string(),
                why,
            })?;
        let actors = ActorsClient::new(channel.clone())
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let mut cluster = ClusterClient::new(channel)
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let version = tokio::time::timeout(
            crate::rpc::CONNECT_TIMEOUT,
            cluster.version(troupe_proto::Empty {}),
        )
        .await
        .map_err(|_| Error::Rpc {
            context: format!("asking the head at {head_address} for its version"),
            code: tonic::Code::DeadlineExceeded,
            status_message: "no answer within 5 s".to_string(),
        })?
        .map_err(|status| {
            Error::rpc(
                format!("asking the head at {head_address} for its version"),
                status,
            )
        })?
        .into_inner();
        tracing::debug!(
            head = head_address,
            version = version.version,
            "connected to head"
        );
        Ok(Arc::new(Client {
            head_address: head_address.to_string(),
            actors,
            cluster,
            session_id,
            token,
            job_id: std::env::var(crate::jobs::JOB_ID_ENV).unwrap_or_default(),
            binary_hash,
            worker_args,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            routes: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            dying: Mutex::new(Dying::new()),
            connections: Mutex::new(HashMap::new()),
            session_keepalive: Mutex::new(None),
        }))
    }

    /// Opens the driver session: while this client lives, its non-detached actors live. When the
    /// head goes away (it restarted), the session is opened again as soon as the head answers.
    pub(crate) async fn open_session(self: &Arc<Self>) -> Result<()> {
        let events = self.start_session_stream(false).await?;
        tokio::spawn(keep_session(Arc::downgrade(self), events));
        Ok(())
    }

    /// Opens the session stream. `reopening`: only if the session is still wanted (it may have
    /// been closed meanwhile, and must then stay closed).
    async fn start_session_stream(
        &self,
        reopening: bool,
    ) -> Result<tonic::Streaming<troupe_proto::SessionEvent>> {
        let (pings, outgoing) = mpsc::channel(4);
        pings
            .send(SessionPing {
                session_id: self.session_id.clone(),
            })
            .await
            .map_err(|_| Error::NoCluster)?;
        let mut cluster = self.cluster.clone();
        let events = cluster
            .session(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .map_err(|status| Error::rpc("opening the driver session", status))?
            .into_inner();
        if let Ok(mut keepalive) = self.session_keepalive.lock() {
            if reopening && keepalive.is_none() {
                // Closed while this stream was opening: dropping `pings` ends it.
                return Err(Error::NoCluster);
            }
            *keepalive = Some(pings);
        }
        Ok(events)
    }

    /// Whether the session should stay open (it was opened and not closed on purpose).
    fn session_wanted(&self) -> bool {
        self.session_keepalive
            .lock()
            .map(|keepalive| keepalive.is_some())
            .unwrap_or(false)
    }

    /// Ends the driver session: the head stops this session's non-detached actors.
    pub(crate) fn close_session(&self) {
        if let Ok(mut keepalive) = self.session_keepalive.lock() {
            keepalive.take();
        }
    }
}

/// Drains the session's events; when the stream ends while the session is still wanted (the
/// head went away), opens it again, backing off from 100 ms to 2 s, until the client is dropped
/// or closes the session.
async fn keep_session(
    client: std::sync::Weak<Client>,
    mut events: tonic::Streaming<troupe_proto::SessionEvent>,
) {
    loop {
        while let Ok(Some(event)) = events.message().await {
            tracing::debug!(message = event.message, "session event");
        }
        let mut pause = Duration::from_millis(100);
        let mut warned = false;
        events = loop {
            let Some(live) = client.upgrade() else {
                return;
            };
            if !live.session_wanted() {
                return;
            }
            if !warned {
                tracing::warn!(
                    head = live.head_address,
                    "the session with the head ended (it went away): opening it again"
                );
                warned = true;
            }
            match live.start_session_stream(true).await {
                Ok(events) => {
                    tracing::info!(head = live.head_address, "session with the head open again");
                    break events;
                }
                Err(_) => {
                    drop(live);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        };
    }
}
