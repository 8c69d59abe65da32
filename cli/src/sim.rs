//! `troupe sim`: replays a GPU-cluster trace through the scheduler. `openb` prints each placement
//! policy's GPU allocation ratio (mean over seeds) and the wall time of one run; `autoscale`
//! (in `sim_autoscale.rs`) replays the trace in time against autoscaled clusters. `--json`
//! writes the same figures.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::path::PathBuf;
use troupe::server::scheduler::POLICY_NAMES;
use troupe::server::sim::{read_nodes, read_pods, run_openb, OpenbRun};

#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// The FGD paper's "InitSchedule" experiment on Alibaba's openb GPU trace.
    Openb(OpenbArgs),
    /// The openb pod list replayed in time (arrivals, departures, LS above BE) against an
    /// autoscaled cluster of the node list's types; baselines in the same run.
    Autoscale {
        /// The folder with openb_node_list_gpu_node.csv and openb_pod_list_default.csv.
        #[arg(long)]
        trace_dir: PathBuf,
        /// Another pod list of the same format, with qos, creation_time and deletion_time.
        #[arg(long)]
        pods: Option<PathBuf>,
        /// Another node list of the same format (its rows become node types and their max).
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// Seconds from a launch to a usable node.
        #[arg(long, default_value_t = 120.0)]
        boot_delay_s: f64,
        /// Also write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Parses "42-51" or "1,5,9".
pub(crate) fn parse_seeds(text: &str) -> anyhow::Result<Vec<u64>> {
    let seeds: Vec<u64> = if let Some((first, last)) = text.split_once('-') {
        let first: u64 = first
            .trim()
            .parse()
            .with_context(|| format!("seeds `{text}`: bad first seed"))?;
        let last: u64 = last
            .trim()
            .parse()
            .with_context(|| format!("seeds `{text}`: bad last seed"))?;
        if last < first || last - first > 10_000 {
            bail!("seeds `{text}`: expected FIRST-LAST with FIRST <= LAST (at most 10,000 seeds)");
        }
        (first..=last).collect()
    } else {
        text.split(',')
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .with_context(|| format!("seeds `{text}`: `{s}` is not a seed"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if seeds.is_empty() {
        bail!("seeds `{text}`: no seeds");
    }
    Ok(seeds)
}

pub(crate) fn run(command: SimCommand) -> anyhow::Result<i32> {
    match command {
        SimCommand::Openb(args) => openb(args),
        SimCommand::Autoscale {
            trace_dir,
            pods,
            nodes,
            boot_delay_s,
            json,
        } => crate::sim_autoscale::run(&trace_dir, pods, nodes, boot_delay_s, json),
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct OpenbArgs {
    /// The folder with openb_node_list_gpu_node.csv and openb_pod_list_default.csv.
    #[arg(long)]
    trace_dir: PathBuf,
    /// A policy (fragmentation, fgd, best-fit, gpu-packing, random) or `all`.
    #[arg(long, default_value = "all")]
    policy: String,
    /// Seeds, as FIRST-LAST or a comma-separated list.
    #[arg(long, default_value = "42-51")]
    seeds: String,
    /// Inflate the workload until it asks for this multiple of the cluster's GPUs.
    #[arg(long, default_value_t = 1.3)]
    tune: f64,
    /// Another pod list of the same format (default: the trace's default pod list).
    #[arg(long)]
    pods: Option<PathBuf>,
    /// Another node list of the same format (default: the trace's GPU nodes).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Runs at once (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn openb(args: OpenbArgs) -> anyhow::Result<i32> {
    let OpenbArgs {
        trace_dir,
        policy,
        seeds,
        tune,
        pods,
        nodes,
        threads,
        json,
    } = args;
    if !(tune.is_finite() && tune > 0.0 && tune <= 100.0) {
        bail!("--tune {tune}: expected a positive number up to 100");
    }
    let seeds = parse_seeds(&seeds)?;
    let policies: Vec<String> = if policy == "all" {
        POLICY_NAMES.iter().map(|p| p.to_string()).collect()
    } else if POLICY_NAMES.contains(&policy.as_str()) {
        vec![policy]
    } else {
        bail!(
            "--policy {policy}: expected one of {} or all",
            POLICY_NAMES.join(", ")
        );
    };
    let nodes_path = nodes.unwrap_or_else(|| trace_dir.join("openb_node_list_gpu_node.csv"));
    let pods_path = pods.unwrap_or_else(|| trace_dir.join("openb_pod_list_default.csv"));
    let nodes = read_nodes(&nodes_path)?;
    let pods = read_pods(&pods_path)?;
    println!(
        "{} nodes from {}, {} pods from {}, tune {tune}, seeds {:?}",
        nodes.len(),
        nodes_path.display(),
        pods.len(),
        pods_path.display(),
        seeds
    );
    let jobs: Vec<(String, u64)> = policies
        .iter()
        .flat_map(|p| seeds.iter().map(move |s| (p.clone(), *s)))
        .collect();
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::<OpenbRun>::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((policy, seed)) = jobs.get(i) else {
                    break;
                };
                if let Some(run) = run_openb(&nodes, &pods, policy, *seed, tune) {
                    if let Ok(mut all) = results.lock() {
                        all.push(run);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let mut runs_json = Vec::new();
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>12}  per seed",
        "policy", "alloc %", "min %", "max %", "s per run"
    );
    for policy in &policies {
        let mut mine: Vec<&OpenbRun> = results.iter().filter(|r| &r.policy == policy).collect();
        mine.sort_by_key(|r| r.seed);
        if mine.len() != seeds.len() {
            bail!(
                "policy {policy}: {} of {} runs finished",
                mine.len(),
                seeds.len()
            );
        }
        let ratios: Vec<f64> = mine.iter().map(|r| r.alloc_ratio_pct).collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let wall = mine.iter().map(|r| r.wall_s).sum::<f64>() / mine.len() as f64;
        let min = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let per_seed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{policy:<14} {mean:>10.2} {min:>10.2} {max:>10.2} {wall:>12.2}  {}",
            per_seed.join(" ")
        );
        runs_json.push(serde_json::json!({
            "policy": policy,
            "is_default": policy == POLICY_NAMES[0],
            "alloc_ratio_mean_pct": mean,
            "alloc_ratio_per_seed_pct": ratios,
            "wall_s_per_run": wall,
            "seeds": seeds,
            "pods_per_run_mean": mine.iter().map(|r| r.pods).sum::<usize>() as f64 / mine.len() as f64,
            "placed_per_run_mean": mine.iter().map(|r| r.placed).sum::<usize>() as f64 / mine.len() as f64,
        }));
    }
    if let Some(path) = json {
        let report = serde_json::json!({
            "trace": {"nodes": nodes_path, "pods": pods_path, "tune": tune},
            "runs": runs_json,
        });
        let written = troupe::report::write_json(&path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", written.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_ranges_or_lists_and_bad_ones_are_named() {
        assert_eq!(parse_seeds("42-45").unwrap(), vec![42, 43, 44, 45]);
        assert_eq!(parse_seeds("7, 9").unwrap(), vec![7, 9]);
        assert!(parse_seeds("9-7").unwrap_err().to_string().contains("9-7"));
        assert!(parse_seeds("x").unwrap_err().to_string().contains("`x`"));
    }
}
