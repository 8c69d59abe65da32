//! `troupe sim autoscale`: the openb pod list replayed in time against troupe's autoscaler and
//! the baselines (a static cluster of every node, a Ray-autoscaler-like and a
//! Cluster-Autoscaler-like policy), all in one run; prints a table and, with `--json`, writes
//! `{"runs": [...]}`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use troupe::server::sim::{
    node_types_of, policies, read_nodes, read_timed_pods, run_autoscale, AutoscaleRun,
};

pub(crate) fn run(
    trace_dir: &Path,
    pods: Option<PathBuf>,
    nodes: Option<PathBuf>,
    boot_delay_s: f64,
    json: Option<PathBuf>,
) -> anyhow::Result<i32> {
    if !(boot_delay_s.is_finite() && (0.0..=86_400.0).contains(&boot_delay_s)) {
        bail!("--boot-delay-s {boot_delay_s}: expected seconds between 0 and 86400");
    }
    let nodes_path = nodes.unwrap_or_else(|| trace_dir.join("openb_node_list_gpu_node.csv"));
    let pods_path = pods.unwrap_or_else(|| trace_dir.join("openb_pod_list_default.csv"));
    let nodes = read_nodes(&nodes_path)?;
    let pods = read_timed_pods(&pods_path)?;
    let types = node_types_of(&nodes);
    println!(
        "{} pods from {} over {:.1} days; {} node types from {} ({} nodes); boot delay {boot_delay_s} s",
        pods.len(),
        pods_path.display(),
        pods.iter().map(|p| p.arrival_s + p.duration_s).fold(0.0, f64::max) / 86_400.0,
        types.len(),
        nodes_path.display(),
        nodes.len(),
    );
    let policies = policies(&types);
    let runs: Vec<AutoscaleRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = policies
            .iter()
            .map(|policy| scope.spawn(|| run_autoscale(&pods, &nodes, policy, boot_delay_s)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a replay panicked")))
            .collect::<anyhow::Result<_>>()
    })?;
    print_table(&runs);
    if let Some(path) = json {
        let report = serde_json::json!({
            "trace": {"nodes": nodes_path, "pods": pods_path, "boot_delay_s": boot_delay_s},
            "runs": runs,
        });
        let written = troupe::report::write_json(&path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", written.display());
    }
    Ok(0)
}

fn print_table(runs: &[AutoscaleRun]) {
    println!(
        "{:<24} {:>11} {:>10} {:>9} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7}",
        "policy",
        "GPU-h prov",
        "GPU-h used",
        "idle GPU-h",
        "util",
        "p50 s",
        "p99 s",
        "p99 LS s",
        "max LS s",
        "p99 BE s",
        "preempt/h",
        "never",
        "launches"
    );
    for r in runs {
        println!(
            "{:<24} {:>11.0} {:>10.0} {:>9.0} {:>5.1}% {:>8.0} {:>8.0} {:>9.0} {:>9.0} {:>9.0} {:>8.3} {:>6} {:>7}",
            format!("{}{}", r.policy, if r.is_default { " (default)" } else { "" }),
            r.gpu_hours_provisioned,
            r.gpu_hours_allocated,
            r.idle_gpu_hours,
            r.utilization * 100.0,
            r.queue_delay_p50_s,
            r.queue_delay_p99_s,
            r.queue_delay_p99_s_ls,
            r.queue_delay_max_s_ls,
            r.queue_delay_p99_s_be,
            r.preemptions_per_hour,
            r.never_placed,
            r.launches
        );
    }
}
