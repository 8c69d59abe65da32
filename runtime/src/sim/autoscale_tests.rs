//! Replays of tiny traces whose figures can be worked out by hand.

use super::*;
use crate::autoscaler::config::NodeType;
use crate::autoscaler::Planner;
use crate::scheduler::{GpuDevice, Request};
use crate::sim::autoscale_policies::default_config;
use crate::sim::trace::Pod;

fn one_gpu_type(max: u32) -> BTreeMap<String, NodeType> {
    BTreeMap::from([(
        "t4".to_string(),
        NodeType {
            cpus: 8.0,
            memory_gib: 32.0,
            gpus: 1,
            gpu_model: "T4".to_string(),
            labels: BTreeMap::new(),
            resources: BTreeMap::new(),
            min: 0,
            max,
            price_per_hour: 0.0,
        },
    )])
}

fn pod(name: &str, qos: Qos, arrival_s: f64, duration_s: f64) -> TimedPod {
    TimedPod {
        pod: Pod {
            name: name.to_string(),
            request: Request {
                cpu_milli: 1000,
                gpu_milli: 1000,
                ..Request::default()
            },
        },
        qos,
        arrival_s,
        duration_s,
    }
}

fn policy(max: u32, preempt: bool) -> SimPolicy {
    let mut config = default_config(one_gpu_type(max));
    config.idle_timeout_s = 300.0;
    SimPolicy {
        name: "test",
        planner: Some(Planner::new(&config)),
        preempt_for_priority: preempt,
        move_any_pod: false,
        is_default: false,
    }
}

#[test]
fn one_pod_waits_for_the_boot_and_the_node_goes_after_the_idle_timeout() {
    let pods = [
        pod("a", Qos::LatencySensitive, 0.0, 100.0),
        pod("b", Qos::LatencySensitive, 1000.0, 50.0),
    ];
    let run = run_autoscale(&pods, &[], &policy(2, true), 120.0);
    // a: launched at 0, ready at 120, runs to 220, idle until 520 (terminated).
    // b: launched at 1000, ready at 1120, runs to 1170 (the run ends with the last pod).
    assert_eq!(run.launches, 2);
    assert_eq!(run.terminations, 1);
    assert_eq!(run.never_placed, 0);
    assert!((run.queue_delay_max_s - 120.0).abs() < 1e-6, "{run:?}");
    let provisioned_s = 520.0 + 170.0;
    assert!(
        (run.gpu_hours_provisioned * 3600.0 - provisioned_s).abs() < 1e-6,
        "{run:?}"
    );
    assert!(
        (run.gpu_hours_allocated * 3600.0 - 150.0).abs() < 1e-6,
        "{run:?}"
    );
    assert!((run.idle_gpu_hours - (provisioned_s - 150.0) / 3600.0).abs() < 1e-9);
}

#[test]
fn latency_sensitive_pods_preempt_best_effort_ones_where_the_policy_allows() {
    let pods = [
        pod("be", Qos::BestEffort, 0.0, 1000.0),
        pod("ls", Qos::LatencySensitive, 500.0, 100.0),
    ];
    let with = run_autoscale(&pods, &[], &policy(1, true), 120.0);
    assert_eq!(with.preemptions, 1, "{with:?}");
    assert_eq!(with.queue_delay_max_s_ls, 0.0, "{with:?}");
    // The best-effort pod waits 120 s at first, then 100 s while preempted.
    assert!((with.queue_delay_p99_s_be - 220.0).abs() < 1e-6, "{with:?}");
    let without = run_autoscale(&pods, &[], &policy(1, false), 120.0);
    assert_eq!(without.preemptions, 0);
    // At its max of one node, the LS pod waits for the BE pod to end at 1120.
    assert!(
        (without.queue_delay_max_s_ls - 620.0).abs() < 1e-6,
        "{without:?}"
    );
}

#[test]
fn a_static_cluster_never_queues_what_fits_and_counts_every_gpu() {
    let node = NodeCapacity {
        cpu_milli: 8000,
        memory_bytes: 32 << 30,
        gpus: vec![GpuDevice {
            index: 0,
            model: "T4".to_string(),
        }],
        ..NodeCapacity::default()
    };
    let nodes = vec![("n0".to_string(), node.clone()), ("n1".to_string(), node)];
    let static_policy = SimPolicy {
        name: "static",
        planner: None,
        preempt_for_priority: false,
        move_any_pod: false,
        is_default: false,
    };
    let pods = [
        pod("a", Qos::BestEffort, 10.0, 90.0),
        pod("b", Qos::BestEffort, 20.0, 80.0),
        pod("c", Qos::BestEffort, 30.0, 10.0),
    ];
    let run = run_autoscale(&pods, &nodes, &static_policy, 120.0);
    assert_eq!(
        run.queue_delay_max_s, 70.0,
        "c waits from 30 for a to end at 100: {run:?}"
    );
    assert!(
        (run.gpu_hours_provisioned * 3600.0 - 2.0 * 110.0).abs() < 1e-6,
        "{run:?}"
    );
    assert!(
        (run.gpu_hours_allocated * 3600.0 - 180.0).abs() < 1e-6,
        "{run:?}"
    );
    // A pod bigger than any node type is never placed, and the run still ends.
    let mut huge = pod("huge", Qos::LatencySensitive, 0.0, 10.0);
    huge.pod.request.gpu_milli = 4000;
    let run = run_autoscale(
        &[huge, pod("a", Qos::BestEffort, 0.0, 10.0)],
        &[],
        &policy(2, true),
        120.0,
    );
    assert_eq!(run.never_placed, 1, "{run:?}");
}
