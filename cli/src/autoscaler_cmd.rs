//! `troupe autoscaler`: checks an autoscaler config as the head would (`check`), prints the
//! node-agent Pod the `kubernetes` provider would create for a node type (`render-pod`, YAML,
//! for review and for schema validation), and builds that provider for `troupe head`.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use troupe::server::autoscaler::{AutoscalerConfig, ExternalProvider, LaunchSpec, ProviderConfig};
use troupe_kubernetes::KubernetesProvider;

#[derive(Debug, Subcommand)]
pub(crate) enum AutoscalerCommand {
    /// Read and check a config; print its node types.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the Pod the kubernetes provider would create for one launch of a node type.
    RenderPod {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node_type: String,
        /// The launch id (default: the type and 8 zeros).
        #[arg(long)]
        launch_id: Option<String>,
        /// The head's address as agents reach it (default: the config's `head_address`).
        #[arg(long)]
        head_address: Option<String>,
    },
}

pub(crate) fn run(command: AutoscalerCommand) -> anyhow::Result<i32> {
    match command {
        AutoscalerCommand::Check { config } => {
            let parsed = AutoscalerConfig::read(&config)?;
            if let ProviderConfig::Kubernetes { .. } = parsed.provider {
                kubernetes_provider(&parsed)?;
            }
            println!("{}: ok", config.display());
            for (name, t) in &parsed.node_types {
                println!(
                    "  {name}: {} CPUs, {} GiB, {} GPU(s) {}, min {} max {}",
                    t.cpus, t.memory_gib, t.gpus, t.gpu_model, t.min, t.max
                );
            }
            Ok(0)
        }
        AutoscalerCommand::RenderPod {
            config,
            node_type,
            launch_id,
            head_address,
        } => {
            let parsed = AutoscalerConfig::read(&config)?;
            let provider = kubernetes_provider(&parsed)?;
            let Some(t) = parsed.node_types.get(&node_type) else {
                bail!(
                    "{}: no node type `{node_type}` (it has {})",
                    config.display(),
                    parsed
                        .node_types
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let spec = LaunchSpec {
                launch_id: launch_id.unwrap_or_else(|| format!("{node_type}-00000000")),
                node_type_name: node_type.clone(),
                node_type: t.clone(),
                head_address: head_address
                    .or(parsed.head_address.clone())
                    .unwrap_or_else(|| "troupe-head:6380".to_string()),
                token_file: PathBuf::new(),
            };
            let pod = provider.render(&spec)?;
            print!("{}", serde_yaml::to_string(&pod)?);
            Ok(0)
        }
    }
}

/// The kubernetes provider a config describes (its pod template read now, so a bad path or
/// manifest stops the head at start).
pub(crate) fn kubernetes_provider(config: &AutoscalerConfig) -> anyhow::Result<KubernetesProvider> {
    let ProviderConfig::Kubernetes {
        namespace,
        image,
        pod_template,
        token_secret,
        node_selectors,
        gpu_resource,
    } = &config.provider
    else {
        bail!("the config's provider is not `kubernetes`");
    };
    let template = match pod_template {
        Some(path) => Some(read_template(path)?),
        None => None,
    };
    Ok(KubernetesProvider::new(
        namespace.clone(),
        image.clone(),
        template,
        token_secret.clone(),
        node_selectors.clone(),
        gpu_resource.clone(),
    ))
}

fn read_template(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the pod template {}", path.display()))?;
    // Rendered once now, so that a template that is not a Pod is refused at start.
    Ok(text)
}

/// The provider `troupe head` hands the runtime, when the config names one built outside it.
pub(crate) fn external_provider(
    config: &AutoscalerConfig,
) -> anyhow::Result<Option<ExternalProvider>> {
    match config.provider {
        ProviderConfig::Kubernetes { .. } => {
            let provider = kubernetes_provider(config)?;
            // A template that does not render is refused here, before the head serves.
            if let Some((name, t)) = config.node_types.iter().next() {
                provider
                    .render(&LaunchSpec {
                        launch_id: format!("{name}-00000000"),
                        node_type_name: name.clone(),
                        node_type: t.clone(),
                        head_address: "check:0".to_string(),
                        token_file: PathBuf::new(),
                    })
                    .context("the kubernetes provider's pod template")?;
            }
            Ok(Some(ExternalProvider(Arc::new(provider))))
        }
        _ => Ok(None),
    }
}
