//! What the multi-process test binaries share. They run without libtest's harness
//! (`harness = false`) because their actors' workers are the test binary itself: each `main`
//! calls `troupe::init()`, then `run_tests` with its tests (on an embedded cluster from
//! `with_local_cluster`, or their own), which runs them within a deadline and prints the
//! libtest-style summary CI reads.

use crate::cluster::Cluster;
use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Runs `tests` (`count` of them) on a fresh tokio runtime, failing them if they take longer
/// than `timeout`; prints "N passed, 0 failed" or the failure and "0 passed, 1 failed".
pub fn run_tests<E: Display>(
    count: usize,
    timeout: Duration,
    tests: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        println!("no tokio runtime\n\n0 passed, 1 failed");
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(timeout, tests).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("{err:#}")),
            Err(_) => Err(format!("timed out after {timeout:?}")),
        }
    });
    match outcome {
        Ok(()) => {
            println!("\n{count} passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("FAILED: {why}\n\n0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

/// Starts an embedded cluster (offering `cpus` CPUs, or the machine's), runs `tests` on it,
/// and shuts it down whatever they return.
pub async fn with_local_cluster<E, Fut>(
    cpus: Option<f64>,
    tests: impl FnOnce(Cluster) -> Fut,
) -> Result<(), E>
where
    E: From<crate::Error>,
    Fut: Future<Output = Result<(), E>>,
{
    let cluster = match cpus {
        Some(cpus) => Cluster::local_builder().cpus(cpus).start().await?,
        None => Cluster::local().await?,
    };
    let outcome = tests(cluster.clone()).await;
    cluster.shutdown().await;
    outcome
}
