//! An open-loop load generator for the replicas: requests are scheduled at a fixed rate whatever
//! the answers' speed, each request's latency is measured from its scheduled time (so a slow
//! answer delays the ones queued behind it and is counted, not hidden), and a few workers with
//! a kept-alive connection to every replica take the schedule in turn.

use crate::model::Example;
use crate::serving::{ClientError, PredictClient, PredictRequest};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What the load saw.
#[derive(Clone, Debug, Default)]
pub struct LoadFigures {
    pub latencies_ms: Vec<f64>,
    pub refused: u64,
    pub failed: u64,
    pub seconds: f64,
    pub first_error: Option<String>,
}

/// What the generator reads while the run goes on.
pub struct LoadInputs {
    pub replicas: Vec<String>,
    pub rate_per_s: f64,
    pub workers: usize,
    /// Events streamed so far (requests pick among them).
    pub streamed: Arc<AtomicUsize>,
    pub examples: Arc<Vec<Example>>,
    pub stop: Arc<AtomicBool>,
}

/// Waits (up to a minute, or until `stop`) until every replica serves a version.
async fn wait_until_served(inputs: &LoadInputs) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for address in &inputs.replicas {
        while Instant::now() < deadline && !inputs.stop.load(Ordering::Relaxed) {
            let served = match PredictClient::connect(address).await {
                Ok(mut client) => client
                    .status()
                    .await
                    .map(|s| s.version > 0)
                    .unwrap_or(false),
                Err(_) => false,
            };
            if served {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs from the replicas' first version until `stop` is set.
pub async fn generate(inputs: LoadInputs) -> LoadFigures {
    wait_until_served(&inputs).await;
    let started = Instant::now();
    let next_ticket = Arc::new(Mutex::new(0u64));
    let figures = Arc::new(Mutex::new(LoadFigures::default()));
    let interval = Duration::from_secs_f64(1.0 / inputs.rate_per_s.max(0.001));
    let inputs = Arc::new(inputs);
    let workers: Vec<_> = (0..inputs.workers.max(1))
        .map(|worker| {
            let inputs = inputs.clone();
            let next_ticket = next_ticket.clone();
            let figures = figures.clone();
            tokio::spawn(async move {
                let mut clients: Vec<Option<PredictClient>> =
                    inputs.replicas.iter().map(|_| None).collect();
                let mut state = crate::features::mix64(worker as u64 + 1);
                loop {
                    let ticket = {
                        let mut next = next_ticket.lock().await;
                        *next += 1;
                        *next - 1
                    };
                    let scheduled = started + interval * ticket as u32;
                    // Wakes at least every 100 ms to see `stop`.
                    while Instant::now() < scheduled && !inputs.stop.load(Ordering::Relaxed) {
                        let wake = scheduled.min(Instant::now() + Duration::from_millis(100));
                        tokio::time::sleep_until(wake.into()).await;
                    }
                    if inputs.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let streamed = inputs.streamed.load(Ordering::Relaxed).max(1);
                    state = crate::features::mix64(state);
                    let example = &inputs.examples[(state % streamed as u64) as usize];
                    let replica = (ticket as usize) % inputs.replicas.len();
                    let outcome =
                        request(&mut clients[replica], &inputs.replicas[replica], example).await;
                    let mut figures = figures.lock().await;
                    match outcome {
                        Ok(()) => figures
                            .latencies_ms
                            .push(scheduled.elapsed().as_secs_f64() * 1e3),
                        Err(err) => {
                            if matches!(err, ClientError::Refused { .. }) {
                                figures.refused += 1;
                            } else {
                                figures.failed += 1;
                                clients[replica] = None;
                            }
                            figures.first_error.get_or_insert_with(|| err.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let mut figures = figures.lock().await.clone();
    figures.seconds = started.elapsed().as_secs_f64();
    figures
}

async fn request(
    client: &mut Option<PredictClient>,
    address: &str,
    example: &Example,
) -> Result<(), ClientError> {
    let exchange = async {
        if client.is_none() {
            *client = Some(PredictClient::connect(address).await?);
        }
        let connected = client.as_mut().expect("connected above");
        connected
            .predict(&PredictRequest {
                fields: example.fields.clone(),
                min_version: 0,
            })
            .await
            .map(|_| ())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => {
            *client = None;
            Err(ClientError::TimedOut {
                address: address.to_string(),
                after: REQUEST_TIMEOUT,
            })
        }
    }
}

/// Longest a request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
