//! `Cluster`: what a driver holds. It is either embedded (`Cluster::local()`: a head and a node
//! agent inside the driver, workers as child processes of the driver's own executable) or
//! connected to a running cluster (`Cluster::connect(addr)`, which first ships the driver's
//! executable to the head so node agents can start workers from it). Either way actors are
//! spawned, looked up, killed and inspected through it.

mod diagnostics;
mod executable;
mod local;
mod placement_groups;
mod status;
pub use placement_groups::{PlacementGroup, PlacementGroupSpec};
pub use status::ClusterStatus;

pub use local::LocalClusterBuilder;

use crate::actor::{Actor, ActorHandle, ActorRef, SpawnOptions};
use crate::client::{self, Client};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;
use troupe_proto::{ActorInfo, ActorState, CreateActorRequest, GetActorRequest, KillActorRequest};

/// A connection to a troupe cluster, embedded or remote.
pub struct Cluster {
    client: Arc<Client>,
    embedded: Option<Arc<local::Embedded>>,
}

impl Clone for Cluster {
    fn clone(&self) -> Self {
        Cluster {
            client: self.client.clone(),
            embedded: self.embedded.clone(),
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("head", &self.client.head_address)
            .field("embedded", &self.embedded.is_some())
            .finish()
    }
}

impl Cluster {
    /// An embedded cluster: head and one node agent in this process, with this machine's CPUs and
    /// memory (and GPUs, with the `cuda` feature). Workers are child processes of this executable.
    pub async fn local() -> Result<Cluster> {
        LocalClusterBuilder::default().start().await
    }

    /// Configures an embedded cluster (declared GPUs, CPUs, custom resources, labels).
    pub fn local_builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// Connects to a running cluster's head (`host:port` or `http://host:port`) and uploads this
    /// executable to it unless the head has it already.
    pub async fn connect(address: &str) -> Result<Cluster> {
        refuse_in_worker()?;
        crate::rpc::normalize_address(address).map_err(|why| Error::Invalid {
            what: "cluster address".to_string(),
            why,
        })?;
        let token = crate::rpc::Token::from_env().map_err(|err| Error::Invalid {
            what: "cluster token".to_string(),
            why: err.to_string(),
        })?;
        let hash = executable::ensure_uploaded(address, &token).await?;
        let client = Client::connect(address, token, new_session_id(), hash, Vec::new()).await?;
        client.open_session().await?;
        client::set_current(&client);
        Ok(Cluster {
            client,
            embedded: None,
        })
    }

    /// What a driver that may run as a job wants: connects to `$TROUPE_ADDRESS` when it is set
    /// (a job's entrypoint always has it, and the cluster token in `$TROUPE_TOKEN`), and starts
    /// an embedded cluster otherwise.
    pub async fn from_env() -> Result<Cluster> {
        match std::env::var(crate::jobs::ADDRESS_ENV) {
            Ok(address) if !address.trim().is_empty() => Cluster::connect(&address).await,
            _ => Cluster::local().await,
        }
    }

    /// The cluster of this process: the last one created or connected, or, inside a worker, the
    /// one the worker belongs to.
    pub fn current() -> Result<Cluster> {
        let client = client::current().ok_or(Error::NoCluster)?;
        Ok(Cluster {
            client,
            embedded: None,
        })
    }

    pub(crate) fn from_parts(
        client: Arc<Client>,
        embedded: Option<Arc<local::Embedded>>,
    ) -> Cluster {
        Cluster { client, embedded }
    }

    /// The head's address (host:port).
    pub fn address(&self) -> &str {
        &self.client.head_address
    }

    /// Spawns an actor of the type named `type_name` with encoded constructor arguments. The
    /// generated `Type::spawn` calls this; user code does not need to.
    pub async fn spawn_raw(
        &self,
        type_name: &str,
        args: Bytes,
        options: SpawnOptions,
    ) -> Result<ActorRef> {
        let resources = options.resource_request()?;
        let request = CreateActorRequest {
            type_name: type_name.to_string(),
            constructor_args: args,
            name: options.name.clone().unwrap_or_default(),
            resources: Some(resources),
            max_restarts: options.max_restarts,
            max_concurrency: options.max_concurrency,
            detached: options.detached,
            owner_session: self.client.session_id.clone(),
            binary_hash: self.client.binary_hash.clone(),
            worker_args: self.client.worker_args.clone(),
            env: self.worker_env(&options),
            gang: options
                .gang
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            gang_size: options.gang.as_ref().map(|(_, size)| *size).unwrap_or(0),
            job_id: self.client.job_id.clone(),
            priority: options.priority,
            preemptible: options.preemptible,
            placement_group_id: options
                .placement_group
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            bundle_index: options.placement_group.as_ref().and_then(|(_, b)| *b),
            spawn_id: uuid::Uuid::new_v4().simple().to_string(),
        };
        // A head that restarts answers again within the patience; the spawn waits for it.
        let info = crate::rpc::while_head_unavailable(
            "spawning an actor",
            crate::rpc::HEAD_OUTAGE_PATIENCE,
            crate::rpc::Resend::Idempotent,
            || {
                let mut actors = self.client.actors.clone();
                let request = request.clone();
                async move { actors.create_actor(request).await }
            },
        )
        .await
        .map_err(|status| Error::rpc(format!("spawning an actor of type {type_name}"), status))?
        .into_inner();
        Ok(ActorRef::new(&info.id, type_name, self.client.clone()))
    }

    /// The worker's extra environment: the spawn options', and the job id, so that actors the
    /// worker spawns belong to the same job.
    fn worker_env(&self, options: &SpawnOptions) -> std::collections::HashMap<String, String> {
        let mut env: std::collections::HashMap<String, String> =
            options.env.clone().into_iter().collect();
        if !self.client.job_id.is_empty() {
            env.insert(
                crate::jobs::JOB_ID_ENV.to_string(),
                self.client.job_id.clone(),
            );
        }
        env
    }

    /// Finds a live actor by the name it was spawned with; fails if it has another type.
    pub async fn get_actor<A: Actor>(&self, name: &str) -> Result<A::Handle> {
        let info = self
            .lookup(GetActorRequest {
                name: name.to_string(),
                ..GetActorRequest::default()
            })
            .await?;
        if info.type_name != A::TYPE_NAME {
            return Err(Error::Invalid {
                what: format!("actor named `{name}`"),
                why: format!("it is a {}, not a {}", info.type_name, A::TYPE_NAME),
            });
        }
        if info.state() == ActorState::Dead {
            return Err(Error::Dead {
                actor: info.id,
                type_name: info.type_name,
                reason: info.death_reason,
            });
        }
        Ok(A::Handle::from(ActorRef::new(
            &info.id,
            &info.type_name,
            self.client.clone(),
        )))
    }

    /// The head's record of an actor: state, node, GPUs, restarts, pid, ...
    pub async fn actor_info(&self, actor: &impl ActorHandle) -> Result<ActorInfo> {
        self.lookup(GetActorRequest {
            id: actor.actor_ref().id().to_string(),
            ..GetActorRequest::default()
        })
        .await
    }

    async fn lookup(&self, request: GetActorRequest) -> Result<ActorInfo> {
        let what = if request.id.is_empty() {
            format!("looking up the actor named `{}`", request.name)
        } else {
            format!("looking up actor {}", request.id)
        };
        // A read: it waits for a head that is restarting.
        Ok(crate::rpc::while_head_unavailable(
            "looking up an actor",
            crate::rpc::HEAD_OUTAGE_PATIENCE,
            crate::rpc::Resend::Idempotent,
            || {
                let mut actors = self.client.actors.clone();
                let request = request.clone();
                async move { actors.get_actor(request).await }
            },
        )
        .await
        .map_err(|status| Error::rpc(what, status))?
        .into_inner())
    }

    /// Stops an actor for good; calls in flight fail with `Error::Died { restarting: false }`.
    pub async fn kill(&self, actor: &impl ActorHandle) -> Result<()> {
        self.kill_by_id(actor.actor_ref().id(), false).await
    }

    /// Kills an actor's worker but lets it restart per its `max_restarts`.
    pub async fn restart(&self, actor: &impl ActorHandle) -> Result<()> {
        self.kill_by_id(actor.actor_ref().id(), true).await
    }

    async fn kill_by_id(&self, id: &str, allow_restart: bool) -> Result<()> {
        let mut actors = self.client.actors.clone();
        actors
            .kill_actor(KillActorRequest {
                id: id.to_string(),
                allow_restart,
            })
            .await
            .map_err(|status| Error::rpc(format!("killing actor {id}"), status))?;
        // The worker may take a moment to go; calls from here must not reach it meanwhile.
        self.client.forget_killed(id);
        Ok(())
    }

    /// Nodes with their resources and usage, every actor, job and placement group, and pending
    /// demand; `status.table()` renders it as `troupe status` does.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let mut cluster = self.client.cluster.clone();
        Ok(cluster
            .status(troupe_proto::Empty {})
            .await
            .map_err(|status| Error::rpc("reading the cluster status", status))?
            .into_inner()
            .into())
    }

    /// Stores `value` under `key` in the head's key-value store (for rendezvous).
    pub async fn kv_put(&self, key: &str, value: Bytes, overwrite: bool) -> Result<()> {
        let resend = if overwrite {
            crate::rpc::Resend::Idempotent
        } else {
            crate::rpc::Resend::IfNotSent
        };
        crate::rpc::while_head_unavailable(
            "storing a key",
            crate::rpc::HEAD_OUTAGE_PATIENCE,
            resend,
            || {
                let mut cluster = self.client.cluster.clone();
                let request = troupe_proto::KvPutRequest {
                    key: key.to_string(),
                    value: value.clone(),
                    overwrite,
                };
                async move { cluster.kv_put(request).await }
            },
        )
        .await
        .map_err(|status| Error::rpc(format!("storing key `{key}`"), status))?;
        Ok(())
    }

    /// The value under `key`, waiting up to `timeout` for it to appear; `None` if it did not.
    pub async fn kv_wait(&self, key: &str, timeout: std::time::Duration) -> Result<Option<Bytes>> {
        let mut cluster = self.client.cluster.clone();
        let request = troupe_proto::KvGetRequest {
            key: key.to_string(),
            wait: true,
            timeout_ms: timeout.as_millis() as u64,
        };
        let reply = tokio::time::timeout(
            timeout + std::time::Duration::from_secs(5),
            cluster.kv_get(request),
        )
        .await
        .map_err(|_| Error::Rpc {
            context: format!("waiting for key `{key}`"),
            code: tonic::Code::DeadlineExceeded,
            status_message: "the head did not answer".to_string(),
        })?
        .map_err(|status| Error::rpc(format!("reading key `{key}`"), status))?
        .into_inner();
        Ok(reply.found.then_some(reply.value))
    }

    /// Ends this driver's session: its non-detached actors stop. An embedded cluster stops too
    /// once its last `Cluster` clone is gone.
    pub async fn shutdown(self) {
        self.client.close_session();
        client::clear_current(&self.client);
        if let Some(embedded) = &self.embedded {
            embedded.shutdown();
        }
    }
}

/// A worker that runs the driver's `main` (because `troupe::init()` was not called first) must
/// not start clusters of its own: each of its actors would do the same, without end.
pub(crate) fn refuse_in_worker() -> Result<()> {
    if crate::worker::is_worker() {
        return Err(Error::Invalid {
            what: "cluster start".to_string(),
            why: "this process is a troupe worker: call troupe::init() first thing in main, before creating or connecting to a cluster".to_string(),
        });
    }
    Ok(())
}

fn new_session_id() -> String {
    format!("session-{}", uuid::Uuid::new_v4().simple())
}
