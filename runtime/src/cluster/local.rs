//! The embedded cluster: a head and one node agent running inside the driver process, on a tokio
//! runtime of their own (two threads), talking gRPC over loopback exactly as separate processes
//! would.

use super::executable;
use super::Cluster;
use crate::client::{self, Client};
use crate::error::{Error, Result};
use crate::head::{self, HeadConfig, HeadHandle};
use crate::node::{self, resources, NodeConfig, NodeHandle};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use troupe_proto::NodeResources;

/// Settings of an embedded cluster; defaults are this machine's CPUs and memory and its detected
/// GPUs (none without the `cuda` feature).
#[derive(Debug, Clone, Default)]
pub struct LocalClusterBuilder {
    cpus: Option<f64>,
    memory_bytes: Option<u64>,
    gpus: Option<u32>,
    gpu_model: Option<String>,
    custom: BTreeMap<String, f64>,
    labels: BTreeMap<String, String>,
}

impl LocalClusterBuilder {
    /// CPUs the node offers (default: this machine's logical CPUs).
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Memory the node offers, in bytes (default: this machine's).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Declares `count` GPUs instead of detecting them.
    pub fn gpus(mut self, count: u32) -> Self {
        self.gpus = Some(count);
        self
    }

    /// The model name of declared GPUs (label `gpu-model`).
    pub fn gpu_model(mut self, model: impl Into<String>) -> Self {
        self.gpu_model = Some(model.into());
        self
    }

    /// A custom resource the node offers.
    pub fn resource(mut self, name: impl Into<String>, quantity: f64) -> Self {
        self.custom.insert(name.into(), quantity);
        self
    }

    /// A node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    fn resources(&self) -> NodeResources {
        let gpus = match self.gpus {
            Some(count) => resources::declared_gpus(
                Some(count),
                None,
                self.gpu_model.as_deref().unwrap_or("declared"),
            ),
            None => resources::detect_gpus(),
        };
        NodeResources {
            cpu_milli: (self.cpus.unwrap_or_else(resources::detect_cpus) * 1000.0).round() as u64,
            memory_bytes: self
                .memory_bytes
                .unwrap_or_else(resources::detect_memory_bytes),
            gpus,
            custom: self.custom.clone().into_iter().collect(),
            labels: self.labels.clone().into_iter().collect(),
        }
    }

    /// Starts the head and the node agent and connects to them.
    pub async fn start(self) -> Result<Cluster> {
        super::refuse_in_worker()?;
        let data_dir = std::env::temp_dir().join(format!(
            "troupe-local-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let exe = executable::current_exe()?;
        let exe_name = executable::local_name(&exe);
        // The head and the node agent get a runtime of their own, so a driver that blocks its
        // thread (or runs a current-thread runtime) never holds up heartbeats and placement.
        let built = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("troupe-embedded")
            .enable_all()
            .build()
            .map_err(|err| Error::Invalid {
                what: "the embedded cluster".to_string(),
                why: format!("cannot start its async runtime: {err}"),
            })?;
        let handle = built.handle().clone();
        let runtime = OwnRuntime(Some(built));
        let node_config = NodeConfig {
            head_address: String::new(),
            host: "127.0.0.1".to_string(),
            port: 0,
            resources: self.resources(),
            work_dir: data_dir.join("node"),
            local_executables: HashMap::from([(exe_name.clone(), exe)]),
            token: crate::rpc::Token::generate(),
        };
        let head_config = HeadConfig::local(data_dir.join("head"));
        let started = handle.spawn(async move {
            let head = head::start(head_config).await?;
            let node = node::start(NodeConfig {
                head_address: head.address.to_string(),
                token: head.token.clone(),
                ..node_config
            })
            .await?;
            Ok::<_, Error>((head, node))
        });
        // On any early return (or if this future is dropped), `runtime` shuts down without
        // blocking and the scratch directory goes.
        let scratch = Scratch(Some(data_dir.clone()));
        let (head, node) = started.await.map_err(|err| Error::Invalid {
            what: "the embedded cluster".to_string(),
            why: format!("starting it failed: {err}"),
        })??;
        let head_address = head.address.to_string();
        let client = Client::connect(
            &head_address,
            head.token.clone(),
            super::new_session_id(),
            exe_name,
            Vec::new(),
        )
        .await?;
        client.open_session().await?;
        client::set_current(&client);
        let _kept = scratch.keep();
        let embedded = Embedded {
            _head: head,
            node,
            data_dir,
            runtime,
        };
        Ok(Cluster::from_parts(
            client,
            Some(std::sync::Arc::new(embedded)),
        ))
    }
}

/// The head and node agent of an embedded cluster; dropping it kills the workers and removes
/// the scratch directory (set TROUPE_KEEP_LOGS=1 to keep worker logs).
pub(crate) struct Embedded {
    _head: HeadHandle,
    node: NodeHandle,
    data_dir: PathBuf,
    /// Runs the head and the node agent; shut down (without waiting) when this drops.
    runtime: OwnRuntime,
}

/// A runtime that shuts down without blocking when dropped (dropping a tokio runtime inside an
/// async context would panic).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The scratch directory of a cluster that is still starting: removed if the start fails.
struct Scratch(Option<PathBuf>);

impl Scratch {
    /// The start succeeded: the directory stays (the `Embedded` now owns it).
    fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Embedded {
    pub(crate) fn shutdown(&self) {
        self.node.kill_workers();
    }

    /// Where this cluster keeps worker logs.
    #[allow(dead_code)]
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.data_dir.join("node").join("logs")
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.node.kill_workers();
        // Stop the head and node tasks first, so they do not write into the removed directory.
        if let Some(runtime) = self.runtime.0.take() {
            runtime.shutdown_background();
        }
        if std::env::var_os("TROUPE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
