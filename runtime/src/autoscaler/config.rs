//! The autoscaler's configuration file (TOML): node types with their resources, counts and
//! price, the scaling rules, and the node provider. Read once at head start; anything unknown,
//! inconsistent or unusable is refused by name.

use crate::scheduler::{GpuDevice, NodeCapacity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The label every node the autoscaler launches carries: its node type.
pub const NODE_TYPE_LABEL: &str = "troupe.io/node-type";
/// The label that ties a registering node agent to the launch that created it.
pub const LAUNCH_ID_LABEL: &str = "troupe.io/launch-id";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the autoscaler config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("autoscaler config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("autoscaler config: {0}")]
    Invalid(String),
}

/// One kind of node the autoscaler may launch.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeType {
    /// CPUs offered (may be fractional).
    pub cpus: f64,
    /// Memory offered, in GiB.
    pub memory_gib: f64,
    /// GPU devices.
    #[serde(default)]
    pub gpus: u32,
    /// Their model (becomes the `gpu-model` label); required when `gpus` > 0.
    #[serde(default)]
    pub gpu_model: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Custom resources, NAME = quantity.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// Nodes of this type kept at all times.
    #[serde(default)]
    pub min: u32,
    /// Nodes of this type at most (launching ones included).
    pub max: u32,
    /// What one node costs per hour (any currency); breaks ties between types that fit.
    #[serde(default)]
    pub price_per_hour: f64,
}

impl NodeType {
    /// What a node of this type offers once registered, as the scheduler sees it (the same
    /// labels a node agent started by a provider registers with).
    pub fn capacity(&self, name: &str) -> NodeCapacity {
        let mut labels = self.labels.clone();
        labels.insert(NODE_TYPE_LABEL.to_string(), name.to_string());
        if self.gpus > 0 {
            labels.insert("gpu-model".to_string(), self.gpu_model.clone());
        }
        NodeCapacity {
            cpu_milli: (self.cpus * 1000.0).round() as u64,
            memory_bytes: (self.memory_gib * (1u64 << 30) as f64).round() as u64,
            gpus: (0..self.gpus)
                .map(|index| GpuDevice {
                    index,
                    model: self.gpu_model.clone(),
                })
                .collect(),
            custom: self.resources.clone(),
            labels,
        }
    }
}

/// Optional scale-down of under-used nodes whose every holder may be moved (preemptible work
/// only): the Cluster Autoscaler's rule, off by default.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consolidation {
    /// A node whose GPU (or, without GPUs, CPU) use is below this share...
    pub below_utilization: f64,
    /// ...for this long is drained, if what it holds fits elsewhere.
    pub after_s: f64,
}

/// How the autoscaler starts and stops nodes.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// `troupe node` processes on this machine.
    Local {
        /// Where their logs go (default: under the head's data directory).
        #[serde(default)]
        log_dir: Option<PathBuf>,
    },
    /// User commands, run with `sh -c`. Each sees TROUPE_LAUNCH_ID, TROUPE_NODE_TYPE,
    /// TROUPE_ADDRESS and the type's resources (TROUPE_CPUS, TROUPE_MEMORY_GIB, TROUPE_GPUS,
    /// TROUPE_GPU_MODEL) in its environment.
    Command {
        /// Starts a node agent that registers with `--label troupe.io/launch-id=$TROUPE_LAUNCH_ID`.
        create: String,
        /// Stops the node of TROUPE_LAUNCH_ID.
        delete: String,
        /// Prints the launch ids of the nodes that exist, one per line.
        list: String,
        /// Each command is killed after this long.
        #[serde(default = "default_command_timeout_s")]
        timeout_s: f64,
    },
    /// Node-agent pods through the Kubernetes API.
    Kubernetes {
        /// The namespace the pods live in (default: the head's own, in a cluster).
        #[serde(default)]
        namespace: Option<String>,
        /// The container image of the node agent.
        image: String,
        /// A pod template (YAML) to start from; the provider fills in the rest.
        #[serde(default)]
        pod_template: Option<PathBuf>,
        /// The Secret holding the cluster token (key `token`).
        #[serde(default = "default_token_secret")]
        token_secret: String,
        /// Node selectors per node type (merged into the template's).
        #[serde(default)]
        node_selectors: BTreeMap<String, BTreeMap<String, String>>,
        /// The GPU resource name requested for a type's GPUs.
        #[serde(default = "default_gpu_resource")]
        gpu_resource: String,
    },
}

fn default_command_timeout_s() -> f64 {
    120.0
}
fn default_token_secret() -> String {
    "troupe-token".to_string()
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_string()
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerConfig {
    pub node_types: BTreeMap<String, NodeType>,
    pub provider: ProviderConfig,
    /// A node that has held nothing this long is drained and stopped.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: f64,
    /// A launched node that has not registered after this long is stopped and launched again.
    #[serde(default = "default_launch_timeout_s")]
    pub launch_timeout_s: f64,
    /// Launch tries per node before the failure is reported and the type is rested.
    #[serde(default = "default_max_launch_attempts")]
    pub max_launch_attempts: u32,
    /// Backoff between failed launches: doubles from `backoff_initial_s` up to `backoff_max_s`.
    #[serde(default = "default_backoff_initial_s")]
    pub backoff_initial_s: f64,
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
    /// How often the autoscaler looks at the cluster.
    #[serde(default = "default_period_s")]
    pub period_s: f64,
    /// Preemptible work may grow the cluster up to this many GPUs (launching ones included);
    /// beyond it only work that cannot be preempted launches nodes. Unset: no cap.
    #[serde(default)]
    pub preemptible_gpu_budget: Option<u32>,
    /// Scale-down of under-used nodes holding only preemptible work (off when unset). Only
    /// `troupe sim autoscale` applies it: the head refuses it, as it does not yet move running
    /// actors off a node.
    #[serde(default)]
    pub consolidation: Option<Consolidation>,
    /// The head's address as launched node agents reach it (default: the address it binds).
    #[serde(default)]
    pub head_address: Option<String>,
}

fn default_idle_timeout_s() -> f64 {
    300.0
}
fn default_launch_timeout_s() -> f64 {
    600.0
}
fn default_max_launch_attempts() -> u32 {
    5
}
fn default_backoff_initial_s() -> f64 {
    5.0
}
fn default_backoff_max_s() -> f64 {
    300.0
}
fn default_period_s() -> f64 {
    5.0
}

impl AutoscalerConfig {
    /// Reads and checks a TOML file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses, by name, what could never work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node_types.is_empty() {
            return bad("no node types: add at least one [node_types.NAME]".to_string());
        }
        for (name, t) in &self.node_types {
            let here = format!("node type `{name}`");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return bad(format!(
                    "{here}: names are letters, digits and dashes (they become labels and pod names)"
                ));
            }
            if !(t.cpus.is_finite() && t.cpus >= 0.0) {
                return bad(format!(
                    "{here}: cpus {} is not a non-negative number",
                    t.cpus
                ));
            }
            if !(t.memory_gib.is_finite() && t.memory_gib >= 0.0) {
                return bad(format!(
                    "{here}: memory_gib {} is not a non-negative number",
                    t.memory_gib
                ));
            }
            if t.min > t.max {
                return bad(format!("{here}: min {} is above max {}", t.min, t.max));
            }
            if t.max == 0 {
                return bad(format!(
                    "{here}: max is 0, so no node of it could ever start"
                ));
            }
            if t.gpus > 0 && t.gpu_model.trim().is_empty() {
                return bad(format!("{here}: {} GPUs but no gpu_model", t.gpus));
            }
            if t.gpus == 0 && !t.gpu_model.is_empty() {
                return bad(format!("{here}: gpu_model `{}` but no GPUs", t.gpu_model));
            }
            if let Some((resource, qty)) = t
                .resources
                .iter()
                .find(|(_, q)| !(q.is_finite() && **q >= 0.0))
            {
                return bad(format!(
                    "{here}: resource {resource} = {qty} is not a non-negative number"
                ));
            }
            let offers_something =
                t.cpus > 0.0 || t.gpus > 0 || t.resources.values().any(|q| *q > 0.0);
            if !offers_something {
                return bad(format!(
                    "{here}: offers no CPU, GPU or custom resource, so no request could ever use it"
                ));
            }
            if !(t.price_per_hour.is_finite() && t.price_per_hour >= 0.0) {
                return bad(format!(
                    "{here}: price_per_hour {} is negative or not a number",
                    t.price_per_hour
                ));
            }
            if t.labels.contains_key(NODE_TYPE_LABEL) || t.labels.contains_key(LAUNCH_ID_LABEL) {
                return bad(format!("{here}: labels {NODE_TYPE_LABEL} and {LAUNCH_ID_LABEL} are set by the autoscaler"));
            }
        }
        const WEEK_S: f64 = 7.0 * 86_400.0;
        for (what, value, low, high) in [
            ("idle_timeout_s", self.idle_timeout_s, 0.1, WEEK_S),
            ("launch_timeout_s", self.launch_timeout_s, 1.0, WEEK_S),
            ("backoff_initial_s", self.backoff_initial_s, 0.01, WEEK_S),
            ("backoff_max_s", self.backoff_max_s, 0.01, WEEK_S),
            ("period_s", self.period_s, 0.05, 3600.0),
        ] {
            if !(value.is_finite() && (low..=high).contains(&value)) {
                return bad(format!(
                    "{what} = {value}: expected seconds between {low} and {high}"
                ));
            }
        }
        if self.backoff_initial_s > self.backoff_max_s {
            return bad(format!(
                "backoff_initial_s {} is above backoff_max_s {}",
                self.backoff_initial_s, self.backoff_max_s
            ));
        }
        if self.max_launch_attempts == 0 {
            return bad("max_launch_attempts = 0: at least one try is needed".to_string());
        }
        if let Some(c) = self.consolidation {
            if !(c.below_utilization > 0.0 && c.below_utilization <= 1.0) {
                return bad(format!(
                    "consolidation.below_utilization {}: expected a share in (0, 1]",
                    c.below_utilization
                ));
            }
            if !(c.after_s.is_finite() && c.after_s > 0.0) {
                return bad(format!(
                    "consolidation.after_s {}: expected a positive number",
                    c.after_s
                ));
            }
        }
        match &self.provider {
            ProviderConfig::Command {
                create,
                delete,
                list,
                timeout_s,
            } => {
                for (what, command) in [("create", create), ("delete", delete), ("list", list)] {
                    if command.trim().is_empty() {
                        return bad(format!("provider.{what} is empty"));
                    }
                }
                if !(timeout_s.is_finite() && (0.1..=86_400.0).contains(timeout_s)) {
                    return bad(format!(
                        "provider.timeout_s {timeout_s}: expected seconds between 0.1 and 86400"
                    ));
                }
            }
            ProviderConfig::Kubernetes {
                image,
                node_selectors,
                ..
            } => {
                if image.trim().is_empty() {
                    return bad("provider.image is empty".to_string());
                }
                if let Some(name) = self
                    .node_types
                    .keys()
                    .find(|n| n.chars().any(|c| c.is_ascii_uppercase()))
                {
                    return bad(format!(
                        "node type `{name}`: with the kubernetes provider, names are lowercase (they become pod names)"
                    ));
                }
                if let Some(unknown) = node_selectors
                    .keys()
                    .find(|t| !self.node_types.contains_key(*t))
                {
                    return bad(format!(
                        "provider.node_selectors names `{unknown}`, which is not a node type"
                    ));
                }
            }
            ProviderConfig::Local { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
idle_timeout_s = 60
[provider]
kind = "local"
[node_types.gpu-2x]
cpus = 8
memory_gib = 32
gpus = 2
gpu_model = "T4"
max = 4
price_per_hour = 1.2
labels = { zone = "a" }
[node_types.cpu]
cpus = 4
memory_gib = 8
min = 1
max = 2
"#;

    fn parse(text: &str) -> Result<AutoscalerConfig, String> {
        let config: AutoscalerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn a_good_file_parses_with_defaults_and_capacities() {
        let config = parse(GOOD).expect("good");
        assert_eq!(config.idle_timeout_s, 60.0);
        assert_eq!(config.launch_timeout_s, 600.0);
        let capacity = config.node_types["gpu-2x"].capacity("gpu-2x");
        assert_eq!(capacity.cpu_milli, 8000);
        assert_eq!(capacity.memory_bytes, 32 << 30);
        assert_eq!(capacity.gpus.len(), 2);
        assert_eq!(capacity.labels["gpu-model"], "T4");
        assert_eq!(capacity.labels[NODE_TYPE_LABEL], "gpu-2x");
        assert_eq!(capacity.labels["zone"], "a");
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let cases = [
            (
                GOOD.replace("idle_timeout_s", "idle_timeout"),
                "unknown field `idle_timeout`",
            ),
            (
                GOOD.replace("price_per_hour", "prize"),
                "unknown field `prize`",
            ),
            (
                GOOD.replace("min = 1", "min = 3"),
                "node type `cpu`: min 3 is above max 2",
            ),
            (GOOD.replace("min = 1", "min = -1"), "min"),
            (
                GOOD.replace("max = 4", "max = 0"),
                "node type `gpu-2x`: max is 0",
            ),
            (
                GOOD.replace("gpu_model = \"T4\"", ""),
                "node type `gpu-2x`: 2 GPUs but no gpu_model",
            ),
            (
                GOOD.replace("cpus = 4", "cpus = 0"),
                "node type `cpu`: offers no CPU, GPU or custom resource",
            ),
            (
                GOOD.replace("kind = \"local\"", "kind = \"cloud\""),
                "unknown variant `cloud`",
            ),
            (
                GOOD.replace("idle_timeout_s = 60", "idle_timeout_s = -5"),
                "idle_timeout_s = -5",
            ),
            (
                GOOD.replace("idle_timeout_s = 60", "period_s = 1e-12"),
                "expected seconds between 0.05 and 3600",
            ),
            (
                GOOD.replace("idle_timeout_s = 60", "launch_timeout_s = 1e20"),
                "launch_timeout_s = 100000000000000000000",
            ),
            (
                GOOD.replace("[node_types.cpu]", "[node_types.\"c p u\"]"),
                "node type `c p u`: names are",
            ),
        ];
        for (text, wanted) in cases {
            let err = parse(&text).expect_err(wanted);
            assert!(err.contains(wanted), "wanted `{wanted}` in: {err}");
        }
        let kube = GOOD.replace(
            "kind = \"local\"",
            "kind = \"kubernetes\"\nimage = \"troupe:1\"\nnode_selectors = { gpu-8x = { pool = \"a\" } }",
        );
        let err = parse(&kube).expect_err("selector of unknown type");
        assert!(err.contains("`gpu-8x`, which is not a node type"), "{err}");
    }
}
