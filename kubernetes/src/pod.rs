//! The node-agent Pod of one launch: the user's template (if any) with the container's image,
//! command, resources (CPU, memory and the type's GPUs as `nvidia.com/gpu`), node selectors,
//! a GPU toleration, the token Secret, labels that tie it to its launch, and the owner that
//! garbage-collects it with the head.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, ResourceRequirements,
    SecretVolumeSource, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;
use troupe::server::autoscaler::{LaunchSpec, LAUNCH_ID_LABEL, NODE_TYPE_LABEL};

/// The container the provider fills in (a template's container of this name, else its first).
pub const CONTAINER_NAME: &str = "troupe-node";
/// Where the token Secret is mounted in the agent's container.
pub const TOKEN_MOUNT: &str = "/var/run/troupe";
/// The label every pod the autoscaler creates carries, for listing them.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "troupe-autoscaler");

/// What the provider's config says about every pod.
#[derive(Debug, Clone, Default)]
pub struct PodSettings {
    pub namespace: String,
    pub image: String,
    pub token_secret: String,
    pub gpu_resource: String,
    /// Node selectors of this launch's type.
    pub node_selector: BTreeMap<String, String>,
    /// The head's pod template (YAML), if any.
    pub template: Option<String>,
    /// Garbage-collects the pod with it (the head's StatefulSet or pod).
    pub owner: Option<OwnerReference>,
}

/// A pod template that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the pod template is not a Pod manifest: {0}")]
    Template(String),
    #[error("launch {0}: not a valid Kubernetes name part (lowercase letters, digits and dashes)")]
    Name(String),
}

/// The Pod for `spec`.
pub fn render_pod(spec: &LaunchSpec, settings: &PodSettings) -> Result<Pod, RenderError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 50
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !valid(&spec.launch_id) {
        return Err(RenderError::Name(spec.launch_id.clone()));
    }
    let mut pod: Pod = match &settings.template {
        Some(text) => {
            let pod: Pod =
                serde_yaml::from_str(text).map_err(|e| RenderError::Template(e.to_string()))?;
            if pod.spec.is_none() {
                return Err(RenderError::Template("it has no spec".to_string()));
            }
            pod
        }
        None => Pod::default(),
    };
    let t = &spec.node_type;
    let meta = &mut pod.metadata;
    meta.name = Some(format!("troupe-node-{}", spec.launch_id));
    meta.generate_name = None;
    meta.namespace = Some(settings.namespace.clone());
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        "app.kubernetes.io/name".to_string(),
        "troupe-node".to_string(),
    );
    labels.insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
    labels.insert(LAUNCH_ID_LABEL.to_string(), spec.launch_id.clone());
    labels.insert(NODE_TYPE_LABEL.to_string(), spec.node_type_name.clone());
    if let Some(owner) = &settings.owner {
        meta.owner_references = Some(vec![owner.clone()]);
    }
    let pod_spec = pod.spec.get_or_insert_with(PodSpec::default);
    pod_spec.restart_policy = Some("Never".to_string());
    if !settings.node_selector.is_empty() {
        pod_spec
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .extend(settings.node_selector.clone());
    }
    if t.gpus > 0 {
        let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
        if !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(settings.gpu_resource.as_str()))
        {
            tolerations.push(Toleration {
                key: Some(settings.gpu_resource.clone()),
                operator: Some("Exists".to_string()),
                effect: Some("NoSchedule".to_string()),
                ..Toleration::default()
            });
        }
    }
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != "troupe-token");
    volumes.push(Volume {
        name: "troupe-token".to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(settings.token_secret.clone()),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    let index = pod_spec
        .containers
        .iter()
        .position(|c| c.name == CONTAINER_NAME)
        .unwrap_or(0);
    if pod_spec.containers.is_empty() {
        pod_spec.containers.push(Container::default());
    }
    let container = &mut pod_spec.containers[index];
    container.name = CONTAINER_NAME.to_string();
    container.image = Some(settings.image.clone());
    container.command = Some(vec!["troupe".to_string()]);
    let mut args = spec.node_args();
    args.extend([
        "--host".to_string(),
        "$(POD_IP)".to_string(),
        "--token-file".to_string(),
        format!("{TOKEN_MOUNT}/token"),
    ]);
    container.args = Some(args);
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != "POD_IP");
    env.push(EnvVar {
        name: "POD_IP".to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.retain(|m| m.name != "troupe-token");
    mounts.push(VolumeMount {
        name: "troupe-token".to_string(),
        mount_path: TOKEN_MOUNT.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    let mut amounts = BTreeMap::new();
    amounts.insert(
        "cpu".to_string(),
        Quantity(format!("{}m", (t.cpus * 1000.0).round() as u64)),
    );
    amounts.insert(
        "memory".to_string(),
        Quantity(format!(
            "{}",
            (t.memory_gib * (1u64 << 30) as f64).round() as u64
        )),
    );
    let mut limits = amounts.clone();
    if t.gpus > 0 {
        limits.insert(settings.gpu_resource.clone(), Quantity(t.gpus.to_string()));
    }
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    resources
        .requests
        .get_or_insert_with(BTreeMap::new)
        .extend(amounts);
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .extend(limits);
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            launch_id: "a100-8x-0f3a9c21".to_string(),
            node_type_name: "a100-8x".to_string(),
            node_type: serde_yaml::from_str(
                "cpus: 96\nmemory_gib: 1024\ngpus: 8\ngpu_model: A100\nmax: 4\n",
            )
            .expect("type"),
            head_address: "troupe-head.troupe.svc:6380".to_string(),
            token_file: "/unused".into(),
        }
    }

    fn settings() -> PodSettings {
        PodSettings {
            namespace: "troupe".to_string(),
            image: "ghcr.io/example/troupe:0.1.0".to_string(),
            token_secret: "troupe-token".to_string(),
            gpu_resource: "nvidia.com/gpu".to_string(),
            node_selector: [(
                "cloud.google.com/gke-accelerator".to_string(),
                "nvidia-a100-80gb".to_string(),
            )]
            .into(),
            template: None,
            owner: None,
        }
    }

    #[test]
    fn the_pod_asks_for_the_types_resources_and_carries_its_launch() {
        let pod = render_pod(&spec(), &settings()).expect("renders");
        let value = serde_json::to_value(&pod).expect("json");
        assert_eq!(value["metadata"]["name"], "troupe-node-a100-8x-0f3a9c21");
        assert_eq!(
            value["metadata"]["labels"][LAUNCH_ID_LABEL],
            "a100-8x-0f3a9c21"
        );
        let container = &value["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "8");
        assert_eq!(container["resources"]["requests"]["cpu"], "96000m");
        let args = container["args"].to_string();
        assert!(
            args.contains("--gpus\",\"8\"") && args.contains("$(POD_IP)"),
            "{args}"
        );
        assert_eq!(value["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
        assert_eq!(
            value["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"],
            "nvidia-a100-80gb"
        );
        assert_eq!(value["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn a_template_is_kept_and_filled_in_and_bad_ones_are_named() {
        let mut with = settings();
        with.template = Some(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    team: rl\nspec:\n  priorityClassName: training\n  containers:\n  - name: sidecar\n    image: busybox\n  - name: troupe-node\n    image: placeholder\n".to_string(),
        );
        let pod = render_pod(&spec(), &with).expect("renders");
        let value = serde_json::to_value(&pod).expect("json");
        assert_eq!(value["metadata"]["labels"]["team"], "rl");
        assert_eq!(value["spec"]["priorityClassName"], "training");
        assert_eq!(value["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(
            value["spec"]["containers"][1]["image"],
            "ghcr.io/example/troupe:0.1.0"
        );
        with.template = Some("kind: Pod\nspec: [1, 2]\n".to_string());
        let err = render_pod(&spec(), &with)
            .expect_err("bad template")
            .to_string();
        assert!(err.contains("not a Pod manifest"), "{err}");
        let mut upper = spec();
        upper.launch_id = "GPU-1".to_string();
        assert!(render_pod(&upper, &settings()).is_err());
    }
}
