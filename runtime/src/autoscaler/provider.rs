//! Node providers: how the autoscaler starts and stops node agents. One trait, three kinds:
//! `local` (processes on this machine), `command` (user commands, so any cloud CLI works) and
//! `kubernetes` (pods through the API). A launch is named by its launch id, which the node
//! agent registers as the label `troupe.io/launch-id`, so the head can tie the two together.

use super::config::{NodeType, LAUNCH_ID_LABEL, NODE_TYPE_LABEL};
use futures::future::BoxFuture;
use std::path::PathBuf;

/// What a provider needs to start one node agent.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub launch_id: String,
    pub node_type_name: String,
    pub node_type: NodeType,
    /// The head's address as node agents reach it (host:port).
    pub head_address: String,
    /// The cluster token's file, for providers whose agents share this machine's disk.
    pub token_file: PathBuf,
}

impl LaunchSpec {
    /// The `troupe node` arguments that make an agent offer exactly this type's resources and
    /// carry the labels that tie it to its launch.
    pub fn node_args(&self) -> Vec<String> {
        let t = &self.node_type;
        let mut args = vec![
            "node".to_string(),
            "--head".to_string(),
            self.head_address.clone(),
            "--cpus".to_string(),
            t.cpus.to_string(),
            "--memory".to_string(),
            ((t.memory_gib * (1u64 << 30) as f64).round() as u64).to_string(),
        ];
        if t.gpus > 0 {
            args.extend([
                "--gpus".to_string(),
                t.gpus.to_string(),
                "--gpu-model".to_string(),
                t.gpu_model.clone(),
            ]);
        }
        for (name, quantity) in &t.resources {
            args.extend(["--resource".to_string(), format!("{name}={quantity}")]);
        }
        let mut labels = t.labels.clone();
        labels.insert(NODE_TYPE_LABEL.to_string(), self.node_type_name.clone());
        labels.insert(LAUNCH_ID_LABEL.to_string(), self.launch_id.clone());
        for (key, value) in labels {
            args.extend(["--label".to_string(), format!("{key}={value}")]);
        }
        args
    }

    /// The environment a `command` provider's commands see.
    pub fn env(&self) -> Vec<(String, String)> {
        let t = &self.node_type;
        vec![
            ("TROUPE_LAUNCH_ID".to_string(), self.launch_id.clone()),
            ("TROUPE_NODE_TYPE".to_string(), self.node_type_name.clone()),
            ("TROUPE_ADDRESS".to_string(), self.head_address.clone()),
            ("TROUPE_CPUS".to_string(), t.cpus.to_string()),
            ("TROUPE_MEMORY_GIB".to_string(), t.memory_gib.to_string()),
            ("TROUPE_GPUS".to_string(), t.gpus.to_string()),
            ("TROUPE_GPU_MODEL".to_string(), t.gpu_model.clone()),
            (
                "TROUPE_NODE_ARGS".to_string(),
                shell_words(&self.node_args()),
            ),
        ]
    }
}

/// Arguments joined for a shell, each single-quoted.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A provider that could not do what was asked; the head keeps going and reports it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} provider could not {action} {launch_id}: {why}")]
    Failed {
        provider: &'static str,
        action: &'static str,
        launch_id: String,
        why: String,
    },
}

/// Starts, stops and lists node agents.
pub trait NodeProvider: Send + Sync {
    /// The provider's kind, for messages.
    fn kind(&self) -> &'static str;
    /// Starts a node agent for `spec`; returns once the start is under way.
    fn create(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<(), ProviderError>>;
    /// Stops the node agent of a launch (a launch that is already gone is not an error).
    fn delete(&self, launch_id: String) -> BoxFuture<'_, Result<(), ProviderError>>;
    /// The launch ids of the node agents that exist.
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>>;
}

/// A provider built outside the runtime (the `kubernetes` one, in crate `troupe-kubernetes`),
/// handed to the head in `HeadConfig::provider`.
#[derive(Clone)]
pub struct ExternalProvider(pub std::sync::Arc<dyn NodeProvider>);

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExternalProvider({})", self.0.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arguments_carry_the_type_and_the_launch() {
        let spec = LaunchSpec {
            launch_id: "gpu-abc".to_string(),
            node_type_name: "gpu".to_string(),
            node_type: NodeType {
                cpus: 2.5,
                memory_gib: 1.0,
                gpus: 2,
                gpu_model: "T4".to_string(),
                labels: [("zone".to_string(), "a".to_string())].into(),
                resources: [("ssd".to_string(), 1.0)].into(),
                min: 0,
                max: 1,
                price_per_hour: 0.0,
            },
            head_address: "10.0.0.1:6380".to_string(),
            token_file: PathBuf::from("/tmp/token"),
        };
        let args = spec.node_args().join(" ");
        assert!(
            args.contains("--cpus 2.5 --memory 1073741824 --gpus 2 --gpu-model T4"),
            "{args}"
        );
        assert!(args.contains("--resource ssd=1"), "{args}");
        assert!(
            args.contains("--label troupe.io/launch-id=gpu-abc"),
            "{args}"
        );
        assert!(args.contains("--label troupe.io/node-type=gpu"), "{args}");
        assert!(args.contains("--label zone=a"), "{args}");
        assert_eq!(shell_words(&["a'b".to_string()]), "'a'\\''b'");
    }
}
