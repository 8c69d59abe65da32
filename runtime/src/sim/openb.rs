//! The openb "InitSchedule" experiment: inflate the pod list with uniformly drawn copies until
//! the requested GPU would pass `tune` times the cluster's, shuffle with a seed, place the pods
//! one by one (never deleting), and report the share of the cluster's milli-GPU allocated.

use super::trace::Pod;
use crate::scheduler::policy::SplitMix64;
use crate::scheduler::{by_name, FragmentationAware, NodeCapacity, PlacementPolicy, Scheduler};
use std::time::Instant;

/// The pods of one run, in arrival order.
pub struct Workload {
    pub pods: Vec<Pod>,
    pub requested_gpu_milli: u64,
}

impl Workload {
    /// The trace's pods plus uniformly drawn copies until the next copy would push the requested
    /// milli-GPU past `tune` x `capacity_gpu_milli`, shuffled with `seed`.
    pub fn inflate(pods: &[Pod], capacity_gpu_milli: u64, tune: f64, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let limit = (capacity_gpu_milli as f64 * tune) as u64;
        let mut all: Vec<Pod> = pods.to_vec();
        let mut requested: u64 = all.iter().map(Pod::gpu_milli).sum();
        let drawable: Vec<&Pod> = pods.iter().filter(|p| p.gpu_milli() > 0).collect();
        let mut copies = 0u64;
        if !pods.is_empty() && !drawable.is_empty() {
            loop {
                let pick = &pods[rng.below(pods.len() as u64) as usize];
                if requested + pick.gpu_milli() > limit {
                    break;
                }
                requested += pick.gpu_milli();
                copies += 1;
                let mut copy = pick.clone();
                copy.name = format!("{}-copy{copies}", pick.name);
                all.push(copy);
            }
        }
        for i in (1..all.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            all.swap(i, j);
        }
        Self {
            pods: all,
            requested_gpu_milli: requested,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct OpenbRun {
    pub policy: String,
    pub seed: u64,
    pub alloc_ratio_pct: f64,
    pub pods: usize,
    pub placed: usize,
    pub wall_s: f64,
}

/// A policy by name for a run; the fragmentation-aware default is told the trace's pod list as
/// its expected workload, as FGD is.
pub fn policy_for(name: &str, pods: &[Pod], seed: u64) -> Option<Box<dyn PlacementPolicy>> {
    let told = || FragmentationAware::with_workload(pods.iter().map(|p| &p.request));
    match name {
        "fragmentation" => return Some(Box::new(told())),
        "fgd" => return Some(Box::new(told().without_stranding())),
        _ => {}
    }
    by_name(name, seed)
}

/// One run of `policy` with `seed` over the cluster `nodes`.
pub fn run_openb(
    nodes: &[(String, NodeCapacity)],
    pods: &[Pod],
    policy: &str,
    seed: u64,
    tune: f64,
) -> Option<OpenbRun> {
    let started = Instant::now();
    let mut scheduler = Scheduler::with_policy(policy_for(policy, pods, seed)?);
    for (id, capacity) in nodes {
        scheduler.add_node(id, capacity.clone());
    }
    let (_, total) = scheduler.gpu_allocation();
    let workload = Workload::inflate(pods, total, tune, seed);
    let mut placed = 0;
    for pod in &workload.pods {
        if scheduler.place(&pod.request).is_ok() {
            placed += 1;
        }
    }
    let (used, total) = scheduler.gpu_allocation();
    Some(OpenbRun {
        policy: policy.to_string(),
        seed,
        alloc_ratio_pct: if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        },
        pods: workload.pods.len(),
        placed,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{GpuDevice, Request};

    fn pod(name: &str, gpu_milli: u64) -> Pod {
        Pod {
            name: name.to_string(),
            request: Request {
                cpu_milli: 1000,
                gpu_milli,
                ..Request::default()
            },
        }
    }

    #[test]
    fn inflation_stops_before_passing_the_limit_and_keeps_every_original() {
        let pods = vec![pod("a", 1000), pod("b", 500), pod("c", 0)];
        let workload = Workload::inflate(&pods, 10_000, 1.3, 42);
        assert!(workload.requested_gpu_milli <= 13_000);
        assert!(workload.requested_gpu_milli > 13_000 - 1000);
        for name in ["a", "b", "c"] {
            assert!(workload.pods.iter().any(|p| p.name == name));
        }
        let again = Workload::inflate(&pods, 10_000, 1.3, 42);
        let names = |w: &Workload| w.pods.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&workload), names(&again), "same seed, same order");
        let other = Workload::inflate(&pods, 10_000, 1.3, 43);
        assert_ne!(names(&workload), names(&other));
    }

    #[test]
    fn a_tiny_cluster_is_filled_exactly() {
        let node = NodeCapacity {
            cpu_milli: 64_000,
            memory_bytes: 1 << 40,
            gpus: (0..4)
                .map(|index| GpuDevice {
                    index,
                    model: "T4".to_string(),
                })
                .collect(),
            ..NodeCapacity::default()
        };
        let nodes = vec![("n0".to_string(), node)];
        let pods = vec![pod("half", 500), pod("one", 1000)];
        for policy in crate::scheduler::POLICY_NAMES {
            let run = run_openb(&nodes, &pods, policy, 7, 2.0).expect("known policy");
            assert!(run.alloc_ratio_pct <= 100.0, "{policy}: {run:?}");
            if *policy != "random" {
                // Packers leave at most one device half used.
                assert!(run.alloc_ratio_pct >= 87.5, "{policy}: {run:?}");
            }
        }
        assert!(run_openb(&nodes, &pods, "no-such-policy", 7, 1.3).is_none());
    }
}
