//! jobs: what running work as a job costs, against running the same command directly, measured
//! in the same run. A head and a node agent run in this process (real gRPC on loopback; the
//! entrypoints are real `sh -c` processes started by the agent).
//!
//! - trivial_job_round_trip: submit `true`, follow its log until the job has finished; baseline:
//!   spawn `sh -c true` and wait for it;
//! - log_line_latency: a job prints its clock every 20 ms; how long until each line reaches a
//!   client tailing the log;
//! - log_throughput: a job writes 64 MiB; submit until the tailing client has every byte;
//!   baseline: the same command into a pipe read by this process;
//! - working_dir_upload: pack and upload a 32 MiB directory, then the same directory again (only
//!   the hash travels the second time).
//!
//! Run: `cargo bench -p troupe --bench jobs -- --json target/jobs.json`

use std::collections::HashMap;
use std::time::Instant;
use troupe::jobs::JobClient;
use troupe::proto::{JobSpec, NodeResources};
use troupe::server::head::{self, HeadConfig};
use troupe::server::node::{self, resources, NodeConfig};

fn summary(name: &str, samples: &mut [f64], unit: &str) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    println!(
        "{name:<34} median {median:>9.2} {unit}   p90 {p90:>9.2} {unit}   (n={})",
        samples.len()
    );
    serde_json::json!({ "name": name, "unit": unit, "median": median, "p90": p90, "samples": samples })
}

fn spec(entrypoint: &str) -> JobSpec {
    JobSpec {
        entrypoint: entrypoint.to_string(),
        ..JobSpec::default()
    }
}

/// Submits and follows the log to the end; returns the seconds taken and the log.
async fn run_job(jobs: &JobClient, spec: JobSpec) -> anyhow::Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let id = jobs.submit("", spec).await?.submission_id;
    let mut log = Vec::new();
    let info = jobs
        .follow(&id, |piece| log.extend_from_slice(piece))
        .await?;
    anyhow::ensure!(info.exit_code == 0 && info.has_exit_code, "{info:?}");
    Ok((started.elapsed().as_secs_f64(), log))
}

async fn round_trips(jobs: &JobClient, rounds: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let mut job = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..rounds {
        job.push(run_job(jobs, spec("true")).await?.0 * 1000.0);
        let started = Instant::now();
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", "true"])
            .status()
            .await?;
        anyhow::ensure!(status.success());
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((job, direct))
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
}

async fn line_latency(jobs: &JobClient, lines: usize) -> anyhow::Result<Vec<f64>> {
    let entrypoint = format!("for i in $(seq {lines}); do date +%s%N; sleep 0.02; done");
    let id = jobs.submit("", spec(&entrypoint)).await?.submission_id;
    let mut pending = String::new();
    let mut samples = Vec::new();
    jobs.follow(&id, |piece| {
        let arrived = now_ns();
        pending.push_str(&String::from_utf8_lossy(piece));
        while let Some(end) = pending.find('\n') {
            if let Ok(printed) = pending[..end].trim().parse::<u128>() {
                samples.push(arrived.saturating_sub(printed) as f64 / 1e6);
            }
            pending.drain(..=end);
        }
    })
    .await?;
    anyhow::ensure!(samples.len() == lines, "{} of {lines} lines", samples.len());
    Ok(samples)
}

async fn throughput(jobs: &JobClient, bytes: usize) -> anyhow::Result<(f64, f64)> {
    let command = format!("head -c {bytes} /dev/zero | tr '\\0' 'x'");
    let (seconds, log) = run_job(jobs, spec(&command)).await?;
    anyhow::ensure!(log.len() == bytes, "{} of {bytes} bytes arrived", log.len());
    let started = Instant::now();
    let output = tokio::process::Command::new("/bin/sh")
        .args(["-c", &command])
        .output()
        .await?;
    anyhow::ensure!(output.stdout.len() == bytes);
    let direct = started.elapsed().as_secs_f64();
    let mib = bytes as f64 / (1 << 20) as f64;
    Ok((mib / seconds, mib / direct))
}

async fn upload(jobs: &JobClient, bytes: usize) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("troupe-bench-wd-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data"))?;
    // Incompressible content, so the upload moves about `bytes`.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let content: Vec<u8> = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for (index, part) in content.chunks(bytes / 8).enumerate() {
        std::fs::write(dir.join("data").join(format!("part-{index}.bin")), part)?;
    }
    let started = Instant::now();
    let first = jobs.upload_working_dir(&dir).await?;
    let first_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let again = jobs.upload_working_dir(&dir).await?;
    let again_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(first == again, "one directory, one hash");
    std::fs::remove_dir_all(&dir)?;
    Ok((first_s * 1000.0, again_s * 1000.0))
}

fn main() -> anyhow::Result<()> {
    troupe::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let scratch = std::env::temp_dir().join(format!("troupe-bench-jobs-{}", std::process::id()));
        let head = head::start(HeadConfig::local(scratch.join("head"))).await?;
        let node = node::start(NodeConfig {
            head_address: head.address.to_string(),
            host: "127.0.0.1".to_string(),
            port: 0,
            resources: NodeResources {
                cpu_milli: (resources::detect_cpus() * 1000.0) as u64,
                memory_bytes: resources::detect_memory_bytes(),
                ..NodeResources::default()
            },
            work_dir: scratch.join("node"),
            local_executables: HashMap::new(),
            token: head.token.clone(),
        })
        .await?;
        let jobs = JobClient::connect(&head.address.to_string(), &head.token).await?;
        // Warm-up: the first job pays for connections and the page cache.
        run_job(&jobs, spec("true")).await?;
        let (mut job, mut direct) = round_trips(&jobs, 20).await?;
        let mut latency = line_latency(&jobs, 100).await?;
        let (job_mib_s, direct_mib_s) = throughput(&jobs, 64 << 20).await?;
        println!("{:<34} {job_mib_s:>9.1} MiB/s through the head; {direct_mib_s:.1} MiB/s into a local pipe (ratio {:.2})", "log_throughput", job_mib_s / direct_mib_s);
        let (first_ms, again_ms) = upload(&jobs, 32 << 20).await?;
        println!("{:<34} first {first_ms:>8.1} ms   again {again_ms:>8.1} ms (hash only)", "working_dir_upload_32mib");
        let round_trip = summary("trivial_job_round_trip", &mut job, "ms");
        let baseline = summary("direct_sh_round_trip (baseline)", &mut direct, "ms");
        let ratio = round_trip["median"].as_f64().unwrap_or(0.0) / baseline["median"].as_f64().unwrap_or(1.0).max(1e-9);
        println!("job round trip / direct spawn: {ratio:.1}x");
        let report = serde_json::json!({
            "bench": "jobs",
            "cluster": "head and node agent in this process; entrypoints are real processes",
            "results": [
                round_trip,
                baseline,
                summary("log_line_latency", &mut latency, "ms"),
                { "name": "log_throughput", "job_mib_per_s": job_mib_s, "direct_pipe_mib_per_s": direct_mib_s, "ratio": job_mib_s / direct_mib_s },
                { "name": "working_dir_upload_32mib", "first_ms": first_ms, "again_ms": again_ms },
            ],
            "round_trip_ratio_vs_direct": ratio,
        });
        if let Some(path) = troupe::report::json_path_arg() {
            println!("wrote {}", troupe::report::write_json(&path, &report)?.display());
        }
        node.kill_jobs();
        drop(node);
        drop(head);
        let _ = std::fs::remove_dir_all(&scratch);
        anyhow::Ok(())
    })
}
