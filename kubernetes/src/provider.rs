//! The provider itself: creates, lists and deletes node-agent pods with the kube crate. The
//! client (in-cluster config, else the kubeconfig) and the owner reference are found at first
//! use, so a head outside a cluster starts and reports the API's refusal on each launch instead.

use crate::pod::{render_pod, PodSettings, MANAGED_BY};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use tokio::sync::OnceCell;
use troupe::server::autoscaler::{LaunchSpec, NodeProvider, ProviderError, LAUNCH_ID_LABEL};

/// Node-agent pods in one namespace.
pub struct KubernetesProvider {
    settings: PodSettings,
    node_selectors: BTreeMap<String, BTreeMap<String, String>>,
    client: OnceCell<kube::Client>,
    /// The head's owner once found (`Some(None)`: there is none to find, outside a cluster).
    owner: tokio::sync::Mutex<Option<Option<OwnerReference>>>,
}

impl KubernetesProvider {
    /// `namespace` unset: the head's own (the service account's), else `default`.
    pub fn new(
        namespace: Option<String>,
        image: String,
        template: Option<String>,
        token_secret: String,
        node_selectors: BTreeMap<String, BTreeMap<String, String>>,
        gpu_resource: String,
    ) -> Self {
        let namespace = namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "default".to_string());
        Self {
            settings: PodSettings {
                namespace,
                image,
                token_secret,
                gpu_resource,
                node_selector: BTreeMap::new(),
                template,
                owner: None,
            },
            node_selectors,
            client: OnceCell::new(),
            owner: tokio::sync::Mutex::new(None),
        }
    }

    /// The pod a launch would create (for `troupe autoscaler render-pod` and the tests).
    pub fn render(&self, spec: &LaunchSpec) -> Result<Pod, crate::RenderError> {
        let mut settings = self.settings.clone();
        settings.node_selector = self
            .node_selectors
            .get(&spec.node_type_name)
            .cloned()
            .unwrap_or_default();
        render_pod(spec, &settings)
    }

    fn failed(action: &'static str, launch_id: &str, why: impl std::fmt::Display) -> ProviderError {
        ProviderError::Failed {
            provider: "kubernetes",
            action,
            launch_id: launch_id.to_string(),
            why: why.to_string(),
        }
    }

    async fn client(
        &self,
        action: &'static str,
        launch_id: &str,
    ) -> Result<&kube::Client, ProviderError> {
        self.client
            .get_or_try_init(|| async move {
                // The TLS stack needs one crypto provider for the process; another part of the
                // program may have installed one already, which is as good.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = kube::Client::try_default().await.map_err(|e| {
                    Self::failed(
                        action,
                        launch_id,
                        format!("no Kubernetes API (in-cluster config or kubeconfig): {e}"),
                    )
                })?;
                Ok(client)
            })
            .await
    }

    /// The owner for new pods; looked up again on the next create if the lookup failed.
    async fn owner(&self, client: &kube::Client) -> Option<OwnerReference> {
        let mut owner = self.owner.lock().await;
        if owner.is_none() {
            if let Ok(found) = owner_of_head(client, &self.settings.namespace).await {
                *owner = Some(found);
            }
        }
        owner.clone().flatten()
    }

    fn pods(&self, client: &kube::Client) -> Api<Pod> {
        Api::namespaced(client.clone(), &self.settings.namespace)
    }
}

/// The head's controller (its StatefulSet), else its own pod, from `POD_NAME`; none outside a
/// cluster (no `POD_NAME`). Pods it owns are deleted with it. `Err`: the lookup failed (logged).
async fn owner_of_head(
    client: &kube::Client,
    namespace: &str,
) -> Result<Option<OwnerReference>, ()> {
    let Ok(name) = std::env::var("POD_NAME") else {
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let head = match pods.get(&name).await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, pod = name, "cannot read the head's pod; this launch gets no owner, the next tries again");
            return Err(());
        }
    };
    if let Some(controller) = head
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true))
    {
        // Not its controller: a StatefulSet would release pods it controls that its selector
        // does not match. An owner that does not control still garbage-collects them.
        return Ok(Some(OwnerReference {
            block_owner_deletion: None,
            controller: None,
            ..controller
        }));
    }
    Ok(Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "Pod".to_string(),
        name,
        uid: head.metadata.uid.ok_or(())?,
        controller: None,
        block_owner_deletion: None,
    }))
}

impl NodeProvider for KubernetesProvider {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn create(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let client = self.client("create", &spec.launch_id).await?;
            let owner = self.owner(client).await;
            let mut pod = self
                .render(&spec)
                .map_err(|e| Self::failed("create", &spec.launch_id, e))?;
            if let Some(owner) = owner {
                pod.metadata.owner_references = Some(vec![owner]);
            }
            self.pods(client)
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| Self::failed("create", &spec.launch_id, e))?;
            Ok(())
        })
    }

    fn delete(&self, launch_id: String) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let client = self.client("delete", &launch_id).await?;
            match self
                .pods(client)
                .delete(
                    &format!("troupe-node-{launch_id}"),
                    &DeleteParams::default(),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(Self::failed("delete", &launch_id, e)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let client = self.client("list", "(all)").await?;
            let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
            let pods = self
                .pods(client)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Self::failed("list", "(all)", e))?;
            Ok(pods
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.labels?.get(LAUNCH_ID_LABEL).cloned())
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_an_api_server_each_call_fails_with_the_reason_and_nothing_panics() {
        // No in-cluster environment and a kubeconfig that does not exist.
        std::env::remove_var("KUBERNETES_SERVICE_HOST");
        std::env::set_var("KUBECONFIG", "/nonexistent/troupe-test-kubeconfig");
        let provider = KubernetesProvider::new(
            Some("troupe".to_string()),
            "troupe:test".to_string(),
            None,
            "troupe-token".to_string(),
            BTreeMap::new(),
            "nvidia.com/gpu".to_string(),
        );
        let err = provider.list().await.expect_err("no API").to_string();
        assert!(err.contains("kubernetes provider could not list"), "{err}");
        assert!(err.contains("no Kubernetes API"), "{err}");
        let err = provider
            .delete("gpu-1".to_string())
            .await
            .expect_err("no API")
            .to_string();
        assert!(err.contains("could not delete gpu-1"), "{err}");
    }
}
