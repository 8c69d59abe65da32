//! The autoscaler's `kubernetes` provider: each launch is a node-agent Pod, rendered from an
//! optional pod template (`pod.rs`) and created, listed and deleted through the Kubernetes API
//! with the kube crate (`provider.rs`), in-cluster or from a kubeconfig. Kept out of the runtime
//! crate so that a head without Kubernetes does not build its client.

mod pod;
mod provider;

pub use pod::{render_pod, PodSettings, RenderError};
pub use provider::KubernetesProvider;
