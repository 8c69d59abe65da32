//! What `troupe sim autoscale` compares: node types drawn from a trace's node list, the
//! autoscaling policies (troupe's default and the baselines) and the figures of one run.

use super::trace::{Qos, TimedPod};
use crate::autoscaler::config::{AutoscalerConfig, Consolidation, NodeType, ProviderConfig};
use crate::autoscaler::{Planner, TypeChoice};
use crate::scheduler::NodeCapacity;
use std::collections::BTreeMap;

/// One policy of the comparison.
#[derive(Debug, Clone)]
pub struct SimPolicy {
    pub name: &'static str,
    /// `None`: a static cluster of every node of the list, up from the start.
    pub planner: Option<Planner>,
    /// Whether latency-sensitive pods may preempt best-effort ones (troupe's head does).
    pub preempt_for_priority: bool,
    /// Whether consolidation may move any pod (the Cluster Autoscaler evicts any pod it can
    /// place elsewhere) or only preemptible ones.
    pub move_any_pod: bool,
    pub is_default: bool,
}

/// Node types from a node list: one per distinct (model, GPUs, CPU, memory), with as many
/// nodes at most as the list has, none kept.
pub fn node_types_of(nodes: &[(String, NodeCapacity)]) -> BTreeMap<String, NodeType> {
    let mut types: BTreeMap<String, NodeType> = BTreeMap::new();
    for (_, capacity) in nodes {
        let model = capacity
            .gpus
            .first()
            .map_or(String::new(), |g| g.model.clone());
        let name = format!(
            "{}-{}g-{}c-{}gi",
            if model.is_empty() {
                "cpu".to_string()
            } else {
                model.to_ascii_lowercase()
            },
            capacity.gpus.len(),
            capacity.cpu_milli / 1000,
            capacity.memory_bytes >> 30
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>();
        types
            .entry(name)
            .and_modify(|t| t.max += 1)
            .or_insert_with(|| NodeType {
                cpus: capacity.cpu_milli as f64 / 1000.0,
                memory_gib: capacity.memory_bytes as f64 / (1u64 << 30) as f64,
                gpus: capacity.gpus.len() as u32,
                gpu_model: model,
                labels: BTreeMap::new(),
                resources: BTreeMap::new(),
                min: 0,
                max: 1,
                price_per_hour: 0.0,
            });
    }
    types
}

/// The autoscaler config troupe's head would use for these node types, with its defaults.
pub fn default_config(node_types: BTreeMap<String, NodeType>) -> AutoscalerConfig {
    let mut config: AutoscalerConfig =
        toml::from_str("[provider]\nkind = \"local\"\n[node_types]\n")
            .expect("a valid minimal config");
    config.node_types = node_types;
    config
}

/// troupe's default (and the same without priority preemption), then the static cluster, a Ray-autoscaler-like and a
/// Cluster-Autoscaler-like policy.
pub fn policies(node_types: &BTreeMap<String, NodeType>) -> Vec<SimPolicy> {
    let base = default_config(node_types.clone());
    let troupe = Planner::new(&base);
    let mut ray = Planner::new(&AutoscalerConfig {
        idle_timeout_s: 300.0,
        ..base.clone()
    });
    ray.choice = TypeChoice::RayUtilization;
    let mut ca = Planner::new(&AutoscalerConfig {
        idle_timeout_s: 600.0,
        consolidation: Some(Consolidation {
            below_utilization: 0.5,
            after_s: 600.0,
        }),
        provider: ProviderConfig::Local { log_dir: None },
        ..base
    });
    ca.choice = TypeChoice::LeastWaste;
    vec![
        SimPolicy {
            name: "troupe",
            planner: Some(troupe),
            preempt_for_priority: true,
            move_any_pod: false,
            is_default: true,
        },
        SimPolicy {
            name: "troupe-no-preemption",
            planner: Some(Planner::new(&default_config(node_types.clone()))),
            preempt_for_priority: false,
            move_any_pod: false,
            is_default: false,
        },
        SimPolicy {
            name: "static",
            planner: None,
            preempt_for_priority: false,
            move_any_pod: false,
            is_default: false,
        },
        SimPolicy {
            name: "ray-like",
            planner: Some(ray),
            preempt_for_priority: false,
            move_any_pod: false,
            is_default: false,
        },
        SimPolicy {
            name: "cluster-autoscaler-like",
            planner: Some(ca),
            preempt_for_priority: false,
            move_any_pod: true,
            is_default: false,
        },
    ]
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoscaleRun {
    pub policy: String,
    pub is_default: bool,
    pub gpu_hours_provisioned: f64,
    pub gpu_hours_allocated: f64,
    pub idle_gpu_hours: f64,
    pub utilization: f64,
    pub queue_delay_p50_s: f64,
    pub queue_delay_p99_s: f64,
    pub queue_delay_max_s: f64,
    pub queue_delay_p50_s_ls: f64,
    pub queue_delay_p99_s_ls: f64,
    pub queue_delay_max_s_ls: f64,
    pub queue_delay_p99_s_be: f64,
    pub preemptions: u64,
    pub preemptions_per_hour: f64,
    pub never_placed: usize,
    pub launches: u64,
    pub terminations: u64,
    pub hours: f64,
    pub wall_s: f64,
}

/// The `q`-quantile (nearest rank) of `values`, 0 when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Waits by class, for the report.
#[derive(Default)]
pub struct Waits {
    pub all: Vec<f64>,
    pub ls: Vec<f64>,
    pub be: Vec<f64>,
}

impl Waits {
    pub fn add(&mut self, pod: &TimedPod, wait_s: f64) {
        self.all.push(wait_s);
        match pod.qos {
            Qos::LatencySensitive => self.ls.push(wait_s),
            Qos::BestEffort => self.be.push(wait_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::GpuDevice;

    #[test]
    fn node_types_group_the_list_and_quantiles_are_nearest_rank() {
        let node = |gpus: u32, cpu: u64| NodeCapacity {
            cpu_milli: cpu,
            memory_bytes: 64 << 30,
            gpus: (0..gpus)
                .map(|index| GpuDevice {
                    index,
                    model: "V100M16".to_string(),
                })
                .collect(),
            ..NodeCapacity::default()
        };
        let nodes = vec![
            ("a".to_string(), node(8, 96_000)),
            ("b".to_string(), node(8, 96_000)),
            ("c".to_string(), node(1, 8_000)),
        ];
        let types = node_types_of(&nodes);
        assert_eq!(types.len(), 2);
        assert_eq!(types["v100m16-8g-96c-64gi"].max, 2);
        assert_eq!(types["v100m16-1g-8c-64gi"].max, 1);
        default_config(types).validate().expect("valid");
        let mut values = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut values, 0.5), 3.0);
        assert_eq!(quantile(&mut values, 0.99), 5.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
