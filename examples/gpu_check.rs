//! gpu_check: a one-shot device check for a machine with an NVIDIA GPU (`cuda` feature).
//!
//! Checks, in order: that the CUDA driver and NCCL libraries load and which devices the driver
//! shows; that the embedded cluster's node advertises the GPU; that an actor spawned with one
//! GPU sees a non-empty CUDA_VISIBLE_DEVICES and finds the device; and that the NCCL backend
//! (world size 1, device 0) rendezvouses and gets exact results from all-reduce, all-gather,
//! broadcast and reduce-scatter. It times each, and a 64 MiB all-reduce (with one rank that is
//! a host-to-device-to-host round trip through NCCL, not a network figure). Every step has a
//! time limit. The last line printed is a JSON summary; the exit status is non-zero if any check
//! failed.
//!
//! Build: `cargo build --release -p troupe --features cuda --example gpu_check`
//! Run: `LD_LIBRARY_PATH=<dir with libnccl.so>:$LD_LIBRARY_PATH target/release/examples/gpu_check`
//! cudarc looks for `libnccl.so` (not `libnccl.so.2`, the only name the nvidia-nccl-cu13 wheel
//! ships), so link `libnccl.so -> libnccl.so.2` in a directory on LD_LIBRARY_PATH.

use anyhow::anyhow;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::time::{Duration, Instant};
use troupe::collective::nccl::NcclCommunicator;
use troupe::collective::{f32_to_bytes, Communicator};
use troupe::{Cluster, SpawnOptions};

/// The limit on every step that waits.
const STEP: Duration = Duration::from_secs(120);
/// Bytes in the timed all-reduce.
const BIG_BYTES: usize = 64 << 20;
/// Timed repetitions of the big all-reduce, after one warm-up.
const REPS: usize = 3;

/// Reports what a worker holding one GPU sees.
pub struct GpuProbe;

#[troupe::actor]
impl GpuProbe {
    pub fn new() -> Self {
        GpuProbe
    }

    /// The worker's CUDA_VISIBLE_DEVICES and the models of the devices the driver shows it.
    pub fn look(&self) -> (String, Vec<String>) {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
        let models = troupe::cuda::devices()
            .into_iter()
            .map(|device| format!("{}:{}", device.index, device.model))
            .collect();
        (visible, models)
    }
}

/// Every check's outcome and every timing, for the summary line.
#[derive(Default)]
struct Report {
    checks: Map<String, Value>,
    timings: Map<String, Value>,
    failed: Vec<String>,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: Value) {
        println!("[{}] {name}: {detail}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failed.push(name.to_string());
        }
        self.checks
            .insert(name.to_string(), json!({ "ok": ok, "detail": detail }));
    }

    fn error(&mut self, name: &str, err: anyhow::Error) {
        self.check(name, false, json!(format!("{err:#}")));
    }

    fn time(&mut self, name: &str, started: Instant) {
        self.seconds(name, started.elapsed().as_secs_f64());
    }

    fn seconds(&mut self, name: &str, seconds: f64) {
        self.timings.insert(name.to_string(), json!(seconds));
    }
}

/// Runs `step` for at most `STEP`, turning a timeout or an error into one error naming `what`.
async fn within<T, E: Into<anyhow::Error>>(
    what: &str,
    step: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Into::<anyhow::Error>::into(err).context(what.to_string())),
        Err(_) => Err(anyhow!("{what}: no answer within {STEP:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let mut report = Report::default();

    let driver = troupe::cuda::driver_present();
    report.check("cuda_driver_loads", driver, json!(driver));
    let nccl = troupe::cuda::nccl_present();
    let hint = "cudarc loads libnccl.so: link it to libnccl.so.2 on LD_LIBRARY_PATH";
    report.check(
        "nccl_loads",
        nccl,
        if nccl { json!(true) } else { json!(hint) },
    );
    let devices: Vec<String> = troupe::cuda::devices()
        .into_iter()
        .map(|device| format!("{}:{}", device.index, device.model))
        .collect();
    report.check("devices", !devices.is_empty(), json!(devices));

    if let Err(err) = on_cluster(&mut report).await {
        report.error("cluster", err);
    }

    let ok = report.failed.is_empty();
    let summary = json!({
        "example": "gpu_check",
        "ok": ok,
        "failed": report.failed,
        "checks": report.checks,
        "timings_s": report.timings,
    });
    println!("{summary}");
    if ok {
        Ok(())
    } else {
        Err(anyhow!("failed checks: {}", report.failed.join(", ")))
    }
}

/// Starts the embedded cluster, runs the cluster and NCCL checks, and shuts it down.
async fn on_cluster(report: &mut Report) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = within("starting the embedded cluster", Cluster::local()).await?;
    report.time("cluster_start", started);
    checks(&cluster, report).await;
    tokio::time::timeout(STEP, cluster.shutdown())
        .await
        .map_err(|_| anyhow!("shutting the cluster down took over {STEP:?}"))
}

/// Every check that needs the cluster; a failed step is recorded and the rest still run.
async fn checks(cluster: &Cluster, report: &mut Report) {
    match within("reading the cluster status", cluster.status()).await {
        Ok(status) => {
            let gpus: Vec<String> = status
                .nodes
                .iter()
                .filter_map(|node| node.total.as_ref())
                .flat_map(|total| total.gpus.iter())
                .map(|gpu| format!("{}:{}", gpu.index, gpu.model))
                .collect();
            report.check("node_advertises_gpu", !gpus.is_empty(), json!(gpus));
        }
        Err(err) => report.error("node_advertises_gpu", err),
    }

    let started = Instant::now();
    let probed = within("spawning a 1-GPU actor and calling it", async {
        let probe = GpuProbe::spawn(cluster, SpawnOptions::new().num_gpus(1.0)).await?;
        let (visible, models) = probe.look().await?;
        let assigned: Vec<u32> = cluster
            .actor_info(&probe)
            .await?
            .gpus
            .iter()
            .map(|gpu| gpu.index)
            .collect();
        cluster.kill(&probe).await?;
        Ok::<_, troupe::Error>((visible, models, assigned))
    })
    .await;
    match probed {
        Ok((visible, models, assigned)) => {
            report.time("actor_spawn_and_call", started);
            let ok = !visible.trim().is_empty() && !models.is_empty() && !assigned.is_empty();
            let detail = json!({
                "cuda_visible_devices": visible,
                "models": models,
                "assigned": assigned,
            });
            report.check("actor_sees_gpu", ok, detail);
        }
        Err(err) => report.error("actor_sees_gpu", err),
    }

    let started = Instant::now();
    let rendezvous =
        NcclCommunicator::rendezvous(cluster, "gpu-check", 0, 1, 0, Duration::from_secs(60));
    let comm = match within("NCCL rendezvous", rendezvous).await {
        Ok(comm) => comm,
        Err(err) => {
            report.error("nccl_rendezvous", err);
            return;
        }
    };
    report.time("nccl_rendezvous", started);
    let (rank, world) = (comm.rank(), comm.world_size());
    report.check(
        "nccl_rendezvous",
        rank == 0 && world == 1,
        json!({ "rank": rank, "world": world }),
    );

    let input: Vec<f32> = (1..=1024).map(|i| i as f32).collect();
    let message: Bytes = f32_to_bytes(&input);

    let mut summed = input.clone();
    let started = Instant::now();
    match within("all_reduce_sum", comm.all_reduce_sum(&mut summed)).await {
        Ok(()) => {
            report.time("all_reduce_sum_4KiB", started);
            let detail = json!({ "first": summed.first(), "last": summed.last() });
            report.check("all_reduce_sum", summed == input, detail);
        }
        Err(err) => report.error("all_reduce_sum", err),
    }

    let started = Instant::now();
    match within("all_gather", comm.all_gather(message.clone())).await {
        Ok(parts) => {
            report.time("all_gather_4KiB", started);
            let lengths: Vec<usize> = parts.iter().map(|part| part.len()).collect();
            report.check("all_gather", parts == vec![message.clone()], json!(lengths));
        }
        Err(err) => report.error("all_gather", err),
    }

    let started = Instant::now();
    match within("broadcast", comm.broadcast(0, Some(message.clone()))).await {
        Ok(received) => {
            report.time("broadcast_4KiB", started);
            report.check("broadcast", received == message, json!(received.len()));
        }
        Err(err) => report.error("broadcast", err),
    }

    let started = Instant::now();
    match within("reduce_scatter_sum", comm.reduce_scatter_sum(input.clone())).await {
        Ok(chunk) => {
            report.time("reduce_scatter_sum_4KiB", started);
            report.check("reduce_scatter_sum", chunk == input, json!(chunk.len()));
        }
        Err(err) => report.error("reduce_scatter_sum", err),
    }

    let big: Vec<f32> = (0..BIG_BYTES / 4).map(|i| (i % 4096) as f32).collect();
    let mut data = big.clone();
    let mut seconds = Vec::with_capacity(REPS);
    for rep in 0..=REPS {
        let started = Instant::now();
        if let Err(err) = within("all_reduce_sum of 64 MiB", comm.all_reduce_sum(&mut data)).await {
            report.error("all_reduce_sum_64MiB", err);
            return;
        }
        if rep > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
    report.seconds("all_reduce_sum_64MiB_best", best);
    report.seconds("all_reduce_sum_64MiB_mean", mean);
    let detail = json!({
        "best_gb_per_s": BIG_BYTES as f64 / best / 1e9,
        "mean_gb_per_s": BIG_BYTES as f64 / mean / 1e9,
        "reps": REPS,
        "note": "world size 1: host-to-device copy, NCCL all-reduce on one rank, device-to-host copy; not a network figure",
    });
    report.check("all_reduce_sum_64MiB", data == big, detail);
}
