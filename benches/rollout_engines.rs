//! rollout_engines: the candle rollout against a vLLM engine on the same model, batch and
//! sampling, in one run: generation tokens/s and the time to take new weights.
//!
//! The model is the GRPO recipe's (addition task, 2 layers, width 256, about 1.3M parameters),
//! the batch the recipe's step (256 prompts of the task, 6 new tokens, temperature 1), each
//! engine on the same number of threads (`--threads`, default 1: a rollout actor's CPU share).
//! Weight update: candle loads a replica buffer into its decoder (what a rollout does after the
//! weight sync); vLLM writes the weights to shared memory, reloads them in place and checks a
//! probe against the decoder (what a vLLM rollout does). Each figure is the median of `--reps`.
//!
//! Run: `cargo bench -p troupe-actors --bench rollout_engines -- --json target/rollout_engines.json`
//! (the vLLM venv is `TROUPE_VLLM_PYTHON`, or made on first use: about 6 GB).

use std::path::PathBuf;
use std::time::Instant;
use troupe_actors::engines::vllm::{VllmConfig, VllmEngine};
use troupe_actors::generate::{generate, SamplingConfig};
use troupe_actors::recipes::policy::small_model;
use troupe_actors::roles::weight_sync::{flatten, unflatten};
use troupe_actors::tasks::arithmetic::AdditionTask;
use troupe_actors::Decoder;

struct Settings {
    threads: usize,
    reps: usize,
    json: Option<PathBuf>,
}

fn settings() -> anyhow::Result<Settings> {
    let mut settings = Settings {
        threads: 1,
        reps: 5,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--threads" => settings.threads = value("--threads")?.parse()?,
            "--reps" => settings.reps = value("--reps")?.parse()?,
            "--json" => settings.json = Some(PathBuf::from(value("--json")?)),
            "--bench" => {}
            other => {
                anyhow::bail!("unknown argument `{other}` (--threads N, --reps N, --json PATH)")
            }
        }
    }
    anyhow::ensure!(
        settings.threads >= 1 && settings.reps >= 1,
        "--threads and --reps must be at least 1"
    );
    Ok(settings)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings()?;
    // Before any thread pool starts; the vLLM child inherits them.
    std::env::set_var("RAYON_NUM_THREADS", settings.threads.to_string());
    std::env::set_var("OMP_NUM_THREADS", settings.threads.to_string());
    let task = AdditionTask::spec(500, 0).build()?;
    let config = small_model(task.as_ref());
    let device = candle_core::Device::Cpu;
    let model = Decoder::new(&config, candle_core::DType::F32, &device, 1)?;
    let other = Decoder::new(&config, candle_core::DType::F32, &device, 2)?;
    let prompts: Vec<Vec<u32>> = task
        .held_out()
        .iter()
        .cycle()
        .take(256)
        .map(|problem| task.prompt_ids(problem))
        .collect::<Result<_, _>>()?;
    let sampling = SamplingConfig {
        max_new_tokens: task.answer_tokens(),
        temperature: 1.0,
        stop_tokens: task.tokenizer().eos_id().into_iter().collect(),
        seed: 7,
        ..SamplingConfig::default()
    };

    // candle: generation, then loading a replica buffer.
    let pad = task.tokenizer().pad_id();
    let mut candle_rates = Vec::new();
    for rep in 0..settings.reps + 1 {
        let started = Instant::now();
        let made = generate(&model, &prompts, pad, &sampling, 0)?;
        let tokens: usize = made.tokens.iter().map(Vec::len).sum();
        if rep > 0 {
            candle_rates.push(tokens as f64 / started.elapsed().as_secs_f64());
        }
    }
    let buffers = [flatten(&other)?, flatten(&model)?];
    let mut candle_updates = Vec::new();
    for rep in 0..settings.reps {
        let started = Instant::now();
        unflatten(&model, &buffers[rep % 2])?;
        candle_updates.push(started.elapsed().as_secs_f64() * 1e3);
    }
    unflatten(&model, &buffers[1])?;

    // vLLM: start, generation (after a first, uncounted batch), weight updates with the probe.
    let started = Instant::now();
    let mut engine = VllmEngine::start(&model, 0, 0, VllmConfig::default()).await?;
    let start_s = started.elapsed().as_secs_f64();
    let vllm_version = engine.stats().vllm_version;
    let mut vllm_rates = Vec::new();
    for rep in 0..settings.reps + 1 {
        let started = Instant::now();
        let made = engine.generate(&prompts, &sampling).await?;
        let tokens: usize = made.tokens.iter().map(Vec::len).sum();
        if rep > 0 {
            vllm_rates.push(tokens as f64 / started.elapsed().as_secs_f64());
        }
    }
    let mut vllm_updates = Vec::new();
    let models = [&other, &model];
    for rep in 0..settings.reps {
        let source = models[rep % 2];
        let stats = engine.load_weights(source, rep as u64 + 1).await?;
        vllm_updates.push(stats.weight_update_ms);
    }
    engine.stop().await;

    let report = serde_json::json!({
        "model_parameters": config.num_parameters(),
        "prompts": prompts.len(),
        "new_tokens_max": sampling.max_new_tokens,
        "threads": settings.threads,
        "reps": settings.reps,
        "candle_tokens_per_s": median(candle_rates),
        "vllm_tokens_per_s": median(vllm_rates),
        "candle_weight_update_ms": median(candle_updates),
        "vllm_weight_update_ms": median(vllm_updates),
        "vllm_start_s": start_s,
        "vllm_version": vllm_version,
    });
    let ratio = report["vllm_tokens_per_s"].as_f64().unwrap_or(0.0)
        / report["candle_tokens_per_s"]
            .as_f64()
            .unwrap_or(1.0)
            .max(1e-9);
    println!(
        "| engine | tokens/s | weight update |\n| --- | --- | --- |\n| candle | {:.0} | {:.2} ms |\n| vLLM {vllm_version} | {:.0} ({ratio:.2}x) | {:.1} ms |\n(vLLM ready in {start_s:.1} s; {} prompts, up to {} new tokens, {} thread(s), medians of {})",
        report["candle_tokens_per_s"].as_f64().unwrap_or(0.0),
        report["candle_weight_update_ms"].as_f64().unwrap_or(0.0),
        report["vllm_tokens_per_s"].as_f64().unwrap_or(0.0),
        report["vllm_weight_update_ms"].as_f64().unwrap_or(0.0),
        prompts.len(),
        sampling.max_new_tokens,
        settings.threads,
        settings.reps,
    );
    if let Some(path) = &settings.json {
        let written = troupe::report::write_json(path, &report)?;
        println!("wrote {}", written.display());
    }
    Ok(())
}
