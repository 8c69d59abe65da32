//! A real vLLM (its CPU build) driven through the rollout role on an embedded cluster: sampling
//! with log-probabilities that match the trainer's decoder on the same weights, a weight update
//! after which the engine answers exactly as the decoder with the new weights does (tied
//! embeddings included), an engine killed with SIGKILL and started again by the role, no engine
//! left behind when the actor is killed, weights of another shape refused by name before they
//! reach the engine (vLLM's in-place reload would half-load them), and a model directory vLLM
//! cannot load refused with vLLM's reason. The venv with vLLM is `TROUPE_VLLM_PYTHON` (the test command makes it) or made
//! here; if it cannot be made, this fails and says why.
//!
//! Run: `cargo test -p troupe-actors --test vllm_engine`

use anyhow::{bail, ensure, Context};
use std::time::{Duration, Instant};
use troupe::{Cluster, SpawnOptions};
use troupe_actors::engines::vllm::{VllmConfig, VllmEngine};
use troupe_actors::generate::{generate, SamplingConfig};
use troupe_actors::model::PaddedBatch;
use troupe_actors::roles::rollout::{Rollout, RolloutEngine};
use troupe_actors::roles::{ModelSource, WeightSet};
use troupe_actors::tokenizer::{BuiltinTokenizer, TextTokenizer};
use troupe_actors::{Decoder, ModelConfig};

/// Engine and decoder log-probabilities in fp32 may differ by rounding, not more.
const TOLERANCE: f32 = 2e-3;

fn model_config() -> ModelConfig {
    let mut config = ModelConfig::tiny(BuiltinTokenizer::new().vocab_size(), 128, 2, 4, 2);
    // vLLM's CPU attention takes head sizes of 32 and up: 128 / 4 heads.
    config.max_position_embeddings = 64;
    assert!(config.tie_word_embeddings, "the test needs tied embeddings");
    config
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 4, 5, 6],
        vec![1, 7],
        vec![1, 9, 9, 3, 2],
        vec![1, 4, 5, 6],
    ]
}

/// The decoder's log p of each response token after its prompt.
fn decoder_logprobs(model: &Decoder, prompt: &[u32], response: &[u32]) -> anyhow::Result<Vec<f32>> {
    let mut sequence = prompt.to_vec();
    sequence.extend_from_slice(response);
    let batch = PaddedBatch::left_padded(&[sequence], BuiltinTokenizer::PAD)?;
    let all = troupe_actors::generate::sequence_logprobs(model, &batch)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(all[all.len() - response.len()..].to_vec())
}

fn largest_gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

async fn rollout_with_vllm(cluster: &Cluster) -> anyhow::Result<()> {
    let source = ModelSource::fresh(model_config(), 5);
    let started = Instant::now();
    let rollout = Rollout::spawn(
        cluster,
        SpawnOptions::new().num_cpus(1.0).name("vllm-rollout"),
        source.clone(),
        BuiltinTokenizer::PAD,
        RolloutEngine::Vllm(VllmConfig::default()),
    )
    .await
    .context("spawning a rollout with a vLLM engine")?;
    ensure!(rollout.engine_name().await? == "vllm");
    let stats = rollout.engine_stats().await?.context("no engine stats")?;
    println!(
        "engine ready in {:.1} s (actor spawned in {:.1} s), pid {:?}",
        stats.start_s,
        started.elapsed().as_secs_f64(),
        stats.pid
    );

    // Sampling: shapes, versions, and log-probabilities the decoder agrees with.
    let decoder = source.build()?;
    let sampling = SamplingConfig {
        max_new_tokens: 6,
        temperature: 1.0,
        seed: 11,
        ..SamplingConfig::default()
    };
    let made = rollout.generate_tokens(prompts(), sampling.clone()).await?;
    ensure!(made.tokens.len() == 4 && made.weight_version == 0);
    ensure!(
        made.tokens[0] != made.tokens[3] || made.tokens[0].is_empty(),
        "equal prompts must draw their own samples: {:?}",
        made.tokens
    );
    let mut gap = 0.0_f32;
    for ((prompt, response), logprobs) in prompts().iter().zip(&made.tokens).zip(&made.logprobs) {
        ensure!(response.len() == 6 && logprobs.len() == 6, "{response:?}");
        gap = gap.max(largest_gap(
            &decoder_logprobs(&decoder, prompt, response)?,
            logprobs,
        ));
    }
    println!("sampled log-probabilities: largest gap to the decoder {gap:.2e}");
    ensure!(gap < TOLERANCE, "engine and decoder differ by {gap}");

    // A weight update: the engine must then answer as the decoder with the new weights does.
    let updated = ModelSource::fresh(model_config(), 77).build()?;
    let version = rollout
        .load_weights(WeightSet::from_model(&updated, 1)?)
        .await?;
    ensure!(version == 1);
    let stats = rollout.engine_stats().await?.context("no engine stats")?;
    println!(
        "weight update {:.1} ms, probe gap {:.2e}",
        stats.weight_update_ms, stats.probe_abs_diff
    );
    let greedy = SamplingConfig {
        max_new_tokens: 6,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let predicted = generate(&updated, &prompts(), BuiltinTokenizer::PAD, &greedy, 1)?;
    let served = rollout.generate_tokens(prompts(), greedy.clone()).await?;
    ensure!(
        served.tokens == predicted.tokens,
        "after the update the engine answered {:?}, the trainer's weights give {:?}",
        served.tokens,
        predicted.tokens
    );
    ensure!(served.weight_version == 1);
    let mut gap = 0.0_f32;
    for ((prompt, response), logprobs) in prompts().iter().zip(&served.tokens).zip(&served.logprobs)
    {
        gap = gap.max(largest_gap(
            &decoder_logprobs(&updated, prompt, response)?,
            logprobs,
        ));
    }
    ensure!(gap < TOLERANCE, "after the update: gap {gap}");

    // SIGKILL the engine: the role starts it again on the current weights.
    let pid = stats.pid.context("no engine pid")?;
    // SAFETY: sends SIGKILL to the engine process this test just asked about.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let again = rollout.generate_tokens(prompts(), greedy).await?;
    ensure!(
        again.tokens == predicted.tokens,
        "after the restart the engine answered {:?}",
        again.tokens
    );
    let stats = rollout.engine_stats().await?.context("no engine stats")?;
    ensure!(
        stats.restarts == 1 && stats.pid != Some(pid) && stats.version == 1,
        "{stats:?}"
    );
    println!("engine killed and started again in {:.1} s", stats.start_s);

    // Killing the actor leaves no engine behind.
    let pid = stats.pid.context("no engine pid")?;
    cluster.kill(&rollout).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while process_alive(pid) {
        if Instant::now() > deadline {
            bail!("engine {pid} outlived its actor by 15 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn weights_of_another_shape_are_refused_by_name() -> anyhow::Result<()> {
    let model = ModelSource::fresh(model_config(), 5).build()?;
    let mut engine = VllmEngine::start(&model, 0, 0, VllmConfig::default()).await?;
    let mut wider = model_config();
    wider.intermediate_size *= 2;
    let other = ModelSource::fresh(wider, 6).build()?;
    let outcome = engine.load_weights(&other, 1).await;
    let Err(error) = outcome else {
        bail!("the engine took weights of another shape");
    };
    let message = error.to_string();
    println!("refused: {}", message.lines().next().unwrap_or_default());
    ensure!(message.contains("vLLM engine of actor"), "{message}");
    ensure!(
        message.contains("mlp.up_proj.weight"),
        "the tensor is not named: {message}"
    );
    // The engine is still there and still serves the weights it had.
    ensure!(engine.probe_difference(&model).await? < f64::from(TOLERANCE));
    engine.stop().await;
    Ok(())
}

async fn a_model_vllm_cannot_load_is_refused_with_its_reason() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("troupe-vllm-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["NoSuchModelForCausalLM"], "model_type": "no_such_model"}"#,
    )?;
    let outcome = VllmEngine::start_serving(&dir, 64, 0, VllmConfig::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
    let Err(error) = outcome else {
        bail!("vLLM started on a model directory with an unknown architecture");
    };
    let message = error.to_string();
    println!("refused: {}", message.lines().next().unwrap_or_default());
    ensure!(message.contains("vLLM engine of actor"), "{message}");
    ensure!(
        message.contains("no_such_model"),
        "vLLM's reason is missing: {message}"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let tests = troupe::testing::with_local_cluster(None, |cluster| async move {
        rollout_with_vllm(&cluster).await?;
        weights_of_another_shape_are_refused_by_name().await?;
        a_model_vllm_cannot_load_is_refused_with_its_reason().await?;
        println!("test vllm_engine_through_the_rollout_role ... ok");
        anyhow::Ok(())
    });
    troupe::testing::run_tests(3, Duration::from_secs(600), tests)
}
