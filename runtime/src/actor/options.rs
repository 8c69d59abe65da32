//! Spawn options: resources, name, lifetime and fault-tolerance settings of one actor.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use troupe_proto::ResourceRequest;

/// How an actor is placed and run. Built with chained setters:
/// `SpawnOptions::new().num_gpus(0.5).name("rollout-0").max_restarts(3)`.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    pub(crate) num_cpus: f64,
    pub(crate) memory_bytes: u64,
    pub(crate) num_gpus: f64,
    pub(crate) custom: BTreeMap<String, f64>,
    pub(crate) label_selector: BTreeMap<String, String>,
    pub(crate) name: Option<String>,
    pub(crate) detached: bool,
    pub(crate) max_restarts: i32,
    pub(crate) max_concurrency: u32,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) gang: Option<(String, u32)>,
    pub(crate) gpu_models: Vec<String>,
    pub(crate) node_affinity: Option<(String, bool)>,
    pub(crate) priority: i32,
    pub(crate) preemptible: bool,
    pub(crate) placement_group: Option<(String, Option<u32>)>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            num_cpus: 1.0,
            memory_bytes: 0,
            num_gpus: 0.0,
            custom: BTreeMap::new(),
            label_selector: BTreeMap::new(),
            name: None,
            detached: false,
            max_restarts: 0,
            max_concurrency: 1,
            env: BTreeMap::new(),
            gang: None,
            gpu_models: Vec::new(),
            node_affinity: None,
            priority: 0,
            preemptible: false,
            placement_group: None,
        }
    }
}

impl SpawnOptions {
    /// One CPU, nothing else, no name, owned by the driver, no restarts, one call at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPU cores reserved (fractions allowed). The worker's thread pools are sized to it.
    pub fn num_cpus(mut self, cpus: f64) -> Self {
        self.num_cpus = cpus;
        self
    }

    /// Memory reserved, in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// GPUs: a fraction below 1 shares one device; 1 or more must be whole.
    pub fn num_gpus(mut self, gpus: f64) -> Self {
        self.num_gpus = gpus;
        self
    }

    /// A custom resource the node must have (`--resource NAME=QTY` on the node).
    pub fn resource(mut self, name: impl Into<String>, quantity: f64) -> Self {
        self.custom.insert(name.into(), quantity);
        self
    }

    /// Only nodes whose label `key` equals `value` (`--label K=V`, or `gpu-model` from
    /// `--gpu-model`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.label_selector.insert(key.into(), value.into());
        self
    }

    /// A cluster-unique name, for `Cluster::get_actor`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A detached actor outlives the driver that created it.
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// How many times a dead worker is replaced (constructor re-run); -1 for no limit.
    pub fn max_restarts(mut self, restarts: i32) -> Self {
        self.max_restarts = restarts;
        self
    }

    /// How many `&self` calls may run at once (`&mut self` calls always run alone).
    pub fn max_concurrency(mut self, calls: u32) -> Self {
        self.max_concurrency = calls;
        self
    }

    /// An environment variable for the worker process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Makes the actor one of `size` members of gang `id`, placed all together or not at all
    /// (`ActorGroup::spawn` sets this).
    pub fn gang(mut self, id: impl Into<String>, size: u32) -> Self {
        self.gang = Some((id.into(), size));
        self
    }

    /// Only GPUs of these models (repeat for several); default: any model.
    pub fn gpu_model(mut self, model: impl Into<String>) -> Self {
        self.gpu_models.push(model.into());
        self
    }

    /// Runs on node `node_id`; with `soft`, only prefers it and falls back to any node.
    pub fn node_affinity(mut self, node_id: impl Into<String>, soft: bool) -> Self {
        self.node_affinity = Some((node_id.into(), soft));
        self
    }

    /// Higher priorities are placed first and may preempt lower, preemptible actors.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Whether higher-priority work may evict this actor (it then goes back to pending).
    pub fn preemptible(mut self, preemptible: bool) -> Self {
        self.preemptible = preemptible;
        self
    }

    /// Runs inside placement group `group_id`: in bundle `bundle`, or the first bundle with room.
    pub fn placement_group(mut self, group_id: impl Into<String>, bundle: Option<u32>) -> Self {
        self.placement_group = Some((group_id.into(), bundle));
        self
    }

    /// Checks the options and converts them to the wire request.
    pub(crate) fn resource_request(&self) -> Result<ResourceRequest> {
        let invalid = |what: &str, why: String| Error::Invalid {
            what: what.to_string(),
            why,
        };
        if !self.num_cpus.is_finite() || self.num_cpus < 0.0 || self.num_cpus > 1.0e6 {
            return Err(invalid(
                "num_cpus",
                format!("{} is not a CPU count", self.num_cpus),
            ));
        }
        if !self.num_gpus.is_finite() || self.num_gpus < 0.0 || self.num_gpus > 1.0e4 {
            return Err(invalid(
                "num_gpus",
                format!("{} is not a GPU count", self.num_gpus),
            ));
        }
        if self.num_gpus > 1.0 && self.num_gpus.fract() != 0.0 {
            return Err(invalid(
                "num_gpus",
                format!("{}: above 1, GPUs must be whole", self.num_gpus),
            ));
        }
        for (name, quantity) in &self.custom {
            if !quantity.is_finite() || *quantity < 0.0 {
                return Err(invalid("resource", format!("{name}={quantity}")));
            }
        }
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "must be at least 1".to_string()));
        }
        if self.max_restarts < -1 {
            return Err(invalid(
                "max_restarts",
                format!("{} (use -1 for no limit)", self.max_restarts),
            ));
        }
        Ok(ResourceRequest {
            cpu_milli: (self.num_cpus * 1000.0).round() as u64,
            memory_bytes: self.memory_bytes,
            gpu_milli: (self.num_gpus * 1000.0).round() as u64,
            custom: self.custom.clone().into_iter().collect(),
            label_selector: self.label_selector.clone().into_iter().collect(),
            gpu_models: self.gpu_models.clone(),
            node_id: self
                .node_affinity
                .as_ref()
                .map(|(node, _)| node.clone())
                .unwrap_or_default(),
            node_soft: self.node_affinity.as_ref().is_some_and(|(_, soft)| *soft),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_fractions_to_milli() {
        let request = SpawnOptions::new()
            .num_cpus(1.5)
            .num_gpus(0.25)
            .resource_request()
            .expect("valid");
        assert_eq!(request.cpu_milli, 1500);
        assert_eq!(request.gpu_milli, 250);
    }

    #[test]
    fn rejects_bad_values_by_name() {
        let err = SpawnOptions::new()
            .num_gpus(1.5)
            .resource_request()
            .unwrap_err();
        assert!(err.to_string().contains("num_gpus"), "{err}");
        let err = SpawnOptions::new()
            .num_cpus(f64::NAN)
            .resource_request()
            .unwrap_err();
        assert!(err.to_string().contains("num_cpus"), "{err}");
        let err = SpawnOptions::new()
            .max_concurrency(0)
            .resource_request()
            .unwrap_err();
        assert!(err.to_string().contains("max_concurrency"), "{err}");
    }
}
