//! scheduler_scale: placement decisions per second of the pure scheduler on one thread, at 1,000
//! and 10,000 nodes of 8 GPUs (96 cores, 1 TiB each), under a stream of single actors (fractions
//! of a GPU, 1, 2 and 4 GPUs, CPU only) and 8-bundle gangs (one GPU per bundle; PACK,
//! STRICT_PACK, SPREAD) at three priorities: 0 and 1 preemptible, 2 not.
//!
//! Each arrival is one decision: place it with the default (fragmentation-aware) policy; if it
//! fits nowhere and outranks someone, plan a preemption, evict the victims (they queue again and
//! come back later as arrivals) and place it. Work also leaves: once the cluster is over 90%
//! allocated, each arrival is preceded by one random departure, so the run measures a busy
//! cluster, not an empty one. Reported: decisions per second, p50 and p99 decision latency,
//! preemptions (and victims) per second, and the GPU allocation ratio at the end.
//!
//! Run: `cargo bench -p troupe --bench scheduler_scale -- --json target/scheduler_scale.json`
//! (`--quick` runs fewer decisions).

use std::collections::VecDeque;
use std::time::Instant;
use troupe::server::scheduler::policy::SplitMix64;
use troupe::server::scheduler::{Claim, GpuDevice, NodeCapacity, Request, Scheduler, Strategy};

struct Arrival {
    id: String,
    bundles: Vec<Request>,
    strategy: Strategy,
    claim: Claim,
}

fn node() -> NodeCapacity {
    NodeCapacity {
        cpu_milli: 96_000,
        memory_bytes: 1 << 40,
        gpus: (0..8)
            .map(|index| GpuDevice {
                index,
                model: "H100".to_string(),
            })
            .collect(),
        ..NodeCapacity::default()
    }
}

fn request(gpu_milli: u64) -> Request {
    let cpu_milli = match gpu_milli {
        0 => 8_000,
        g if g < 1000 => 4_000,
        g => g / 1000 * 10_000,
    };
    Request {
        cpu_milli,
        memory_bytes: (cpu_milli / 1000) << 33,
        gpu_milli,
        ..Request::default()
    }
}

fn arrival(rng: &mut SplitMix64, serial: u64) -> Arrival {
    let priority = match rng.below(100) {
        0..50 => 0,
        50..85 => 1,
        _ => 2,
    };
    let claim = Claim {
        priority,
        preemptible: priority < 2,
        since_s: 0.0,
    };
    let (bundles, strategy) = if rng.below(100) < 20 {
        let strategy = match rng.below(10) {
            0..6 => Strategy::Pack,
            6..8 => Strategy::StrictPack,
            _ => Strategy::Spread,
        };
        (vec![request(1000); 8], strategy)
    } else {
        let gpu = match rng.below(100) {
            0..10 => 250,
            10..25 => 500,
            25..70 => 1000,
            70..85 => 2000,
            85..95 => 4000,
            _ => 0,
        };
        (vec![request(gpu)], Strategy::Pack)
    };
    Arrival {
        id: format!("w{serial}"),
        bundles,
        strategy,
        claim,
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

fn run(nodes: usize, decisions: usize, seed: u64) -> serde_json::Value {
    let mut scheduler = Scheduler::new();
    for index in 0..nodes {
        scheduler.add_node(&format!("node-{index:05}"), node());
    }
    let mut rng = SplitMix64::new(seed);
    let mut live: Vec<String> = Vec::new();
    let mut requeued: VecDeque<Arrival> = VecDeque::new();
    let mut latencies = Vec::with_capacity(decisions);
    let (mut placed, mut preemptions, mut victims, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut serial = 0u64;
    let mut clock_s = 0.0;
    let started = Instant::now();
    for _ in 0..decisions {
        clock_s += 0.01;
        let (used, total) = scheduler.gpu_allocation();
        if used * 10 > total * 9 && !live.is_empty() {
            let leaving = live.swap_remove(rng.below(live.len() as u64) as usize);
            scheduler.release_holder(&leaving);
        }
        let mut next = match requeued.front() {
            Some(_) if rng.below(10) == 0 => requeued.pop_front().expect("front exists"),
            _ => {
                serial += 1;
                arrival(&mut rng, serial)
            }
        };
        next.claim.since_s = clock_s;
        let decision = Instant::now();
        for bundle in &next.bundles {
            scheduler.observe(bundle);
        }
        let mut outcome = scheduler.place_group(&next.id, &next.bundles, next.strategy, next.claim);
        if outcome.is_err() && next.claim.priority > 0 {
            if let Some(evicted) =
                scheduler.plan_preemption(&next.bundles, next.strategy, next.claim, clock_s, &[])
            {
                preemptions += 1;
                victims += evicted.len() as u64;
                for victim in &evicted {
                    scheduler.release_holder(victim);
                }
                outcome = scheduler.place_group(&next.id, &next.bundles, next.strategy, next.claim);
                live.retain(|id| !evicted.contains(id));
                // Victims go back to pending; they return as arrivals later.
                for id in evicted {
                    let number: u64 = id[1..].parse().unwrap_or(0);
                    let mut again = arrival(&mut SplitMix64::new(number), number);
                    again.id = id;
                    requeued.push_back(again);
                }
            }
        }
        latencies.push(decision.elapsed().as_secs_f64() * 1e6);
        match outcome {
            Ok(_) => {
                placed += 1;
                live.push(next.id);
            }
            Err(_) => failed += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let scheduler_s: f64 = latencies.iter().sum::<f64>() / 1e6;
    latencies.sort_by(f64::total_cmp);
    let (used, total) = scheduler.gpu_allocation();
    let report = serde_json::json!({
        "nodes": nodes,
        "gpus": total / 1000,
        "decisions": decisions,
        "decisions_per_s": decisions as f64 / scheduler_s,
        "decision_latency_p50_us": percentile(&latencies, 0.50),
        "decision_latency_p99_us": percentile(&latencies, 0.99),
        "preemptions": preemptions,
        "preemptions_per_s": preemptions as f64 / scheduler_s,
        "victims_per_s": victims as f64 / scheduler_s,
        "placed": placed,
        "not_placed": failed,
        "gpu_alloc_ratio_pct": used as f64 * 100.0 / total as f64,
        "wall_s": wall,
    });
    println!(
        "{nodes:>6} nodes: {:>8.0} decisions/s   p50 {:>7.1} us   p99 {:>8.1} us   {:>6.1} preemptions/s ({} victims)   GPU allocated {:.2}%   ({} placed, {} not, {:.1} s)",
        report["decisions_per_s"].as_f64().unwrap_or(0.0),
        report["decision_latency_p50_us"].as_f64().unwrap_or(0.0),
        report["decision_latency_p99_us"].as_f64().unwrap_or(0.0),
        report["preemptions_per_s"].as_f64().unwrap_or(0.0),
        victims,
        report["gpu_alloc_ratio_pct"].as_f64().unwrap_or(0.0),
        placed,
        failed,
        wall
    );
    report
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut runs = Vec::new();
    for (nodes, decisions) in [(1_000, 30_000), (10_000, 100_000)] {
        let decisions = if quick { decisions / 10 } else { decisions };
        runs.push(run(nodes, decisions, 2026));
    }
    let report =
        serde_json::json!({ "bench": "scheduler_scale", "policy": "fragmentation", "runs": runs });
    if let Some(path) = troupe::report::json_path_arg() {
        match troupe::report::write_json(&path, &report) {
            Ok(written) => println!("wrote {}", written.display()),
            Err(err) => eprintln!("cannot write {}: {err}", path.display()),
        }
    }
}
