//! model_speed: generation and training throughput of the decoder on this machine's CPU.
//!
//! For the ~2M-parameter recipe model (2 layers, width 256) and a 4-layer, 256-wide model:
//! generation tokens/s (batch 32, 8-token prompts, 64 new tokens, sampling with the KV cache) and
//! training tokens/s (forward, backward and an AdamW step on 32 sequences of 72 tokens).
//! Run: `cargo bench -p troupe-actors --bench model_speed -- --json target/model_speed.json`

use std::time::Instant;
use troupe_actors::generate::{generate, SamplingConfig};
use troupe_actors::roles::trainer::{PolicyConfig, Trainer, TrainerConfig};
use troupe_actors::roles::ModelSource;
use troupe_actors::train::optim::{AdamWConfig, LrSchedule};
use troupe_actors::{Decoder, ModelConfig};

fn model_config(layers: usize, intermediate: usize) -> ModelConfig {
    let mut config = ModelConfig::tiny(25, 256, layers, 8, 8);
    config.intermediate_size = intermediate;
    config
}

fn measure(name: &str, config: ModelConfig) -> anyhow::Result<serde_json::Value> {
    let device = candle_core::Device::Cpu;
    let model = Decoder::new(&config, candle_core::DType::F32, &device, 1)?;
    let prompts: Vec<Vec<u32>> = (0..32)
        .map(|i| (0..8).map(|j| 3 + ((i * 7 + j * 3) % 20) as u32).collect())
        .collect();
    let sampling = SamplingConfig {
        max_new_tokens: 64,
        temperature: 1.0,
        seed: 1,
        ..SamplingConfig::default()
    };
    generate(&model, &prompts[..4], 0, &sampling, 0)?;
    let rounds = 3;
    let started = Instant::now();
    let mut generated = 0;
    for round in 0..rounds {
        let out = generate(
            &model,
            &prompts,
            0,
            &SamplingConfig {
                seed: round,
                ..sampling.clone()
            },
            0,
        )?;
        generated += out.tokens.iter().map(Vec::len).sum::<usize>();
    }
    let generation_tokens_per_s = generated as f64 / started.elapsed().as_secs_f64();

    let mut trainer = Trainer::from_model(
        model,
        TrainerConfig {
            source: ModelSource::Fresh {
                config: config.clone(),
                seed: 1,
            },
            pad_id: 0,
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::constant(1e-4),
            max_grad_norm: 1.0,
            micro_batch: 0,
            policy: PolicyConfig::default(),
        },
    );
    let targets: Vec<Vec<u32>> = (0..32)
        .map(|i| (0..64).map(|j| 3 + ((i + j * 5) % 20) as u32).collect())
        .collect();
    futures::executor::block_on(trainer.sft_step(prompts.clone(), targets.clone()))?;
    let steps = 3;
    let started = Instant::now();
    for _ in 0..steps {
        futures::executor::block_on(trainer.sft_step(prompts.clone(), targets.clone()))?;
    }
    let trained = steps * 32 * 72;
    let training_tokens_per_s = trained as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name:<24} {:>9} params   generation {generation_tokens_per_s:>9.0} tokens/s   training {training_tokens_per_s:>9.0} tokens/s",
        config.num_parameters()
    );
    Ok(serde_json::json!({
        "name": name,
        "parameters": config.num_parameters(),
        "generation_tokens_per_s": generation_tokens_per_s,
        "training_tokens_per_s": training_tokens_per_s,
        "generation": "batch 32, 8-token prompts, 64 new tokens, KV cache",
        "training": "32 sequences x 72 tokens, forward + backward + AdamW",
    }))
}

fn main() -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("CPU threads: {threads}");
    let results = vec![
        measure("recipe (2 x 256)", model_config(2, 768))?,
        measure("4 layers x 256", model_config(4, 1024))?,
    ];
    if let Some(path) = troupe::report::json_path_arg() {
        let report = serde_json::json!({ "bench": "model_speed", "device": "cpu", "threads": threads, "models": results });
        println!(
            "wrote {}",
            troupe::report::write_json(&path, &report)?.display()
        );
    }
    Ok(())
}
