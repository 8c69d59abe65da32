//! model_speed: generation and training throughput of the decoder on this machine's CPU, and
//! what loading a real-sized checkpoint costs.
//!
//! - The ~2M-parameter recipe model (2 layers, width 256) and a 4-layer, 256-wide model:
//!   generation tokens/s (batch 32, 8-token prompts, 64 new tokens, sampling with the KV cache)
//!   and training tokens/s (forward, backward and an AdamW step on 32 sequences of 72 tokens).
//! - A Qwen2.5-0.5B-shaped checkpoint (494M parameters, random weights, bf16 on disk, written by
//!   this bench): in a fresh child process per run dtype (f32, bf16), the load time, the peak
//!   resident memory against the checkpoint's size, then generation tokens/s (batch 4, 16-token
//!   prompts, 16 new tokens) and training tokens/s (2 sequences of 32 tokens, AdamW).
//!
//! Run: `cargo bench -p troupe-actors --bench model_speed -- --json target/model_speed.json`
//! (`--only small` or `--only qwen` for one part; the checkpoint goes to
//! `target/model_speed/qwen2.5-0.5b-shape`, about 1 GB, reused while its config is unchanged).

use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::time::Instant;
use troupe_actors::generate::{generate, SamplingConfig};
use troupe_actors::roles::trainer::{PolicyConfig, Trainer, TrainerConfig};
use troupe_actors::roles::ModelSource;
use troupe_actors::train::optim::{AdamWConfig, LrSchedule};
use troupe_actors::weights::{load_pretrained, save_pretrained};
use troupe_actors::{Decoder, ModelConfig};

const CHILD_FLAG: &str = "--measure-checkpoint";

fn model_config(layers: usize, intermediate: usize) -> ModelConfig {
    let mut config = ModelConfig::tiny(25, 256, layers, 8, 8);
    config.intermediate_size = intermediate;
    config
}

/// The shape of Qwen2.5-0.5B (its config.json, weights random).
fn qwen_half_billion() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"qwen2","architectures":["Qwen2ForCausalLM"],"vocab_size":151936,
        "hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,
        "num_attention_heads":14,"num_key_value_heads":2,"max_position_embeddings":32768,
        "rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true,
        "use_sliding_window":false,"sliding_window":32768,"max_window_layers":21,
        "hidden_act":"silu","bos_token_id":151643,"eos_token_id":151643,"torch_dtype":"bfloat16"}"#,
    )
    .expect("the Qwen2.5-0.5B config parses")
}

fn trainer_for(model: Decoder, config: &ModelConfig) -> Trainer {
    Trainer::from_model(
        model,
        TrainerConfig {
            source: ModelSource::fresh(config.clone(), 1),
            pad_id: 0,
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::constant(1e-4),
            max_grad_norm: 1.0,
            micro_batch: 0,
            policy: PolicyConfig::default(),
        },
    )
}

/// Tokens/s of `rounds` generations of `prompts`.
fn generation_speed(
    model: &Decoder,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    rounds: u64,
) -> anyhow::Result<f64> {
    let sampling = SamplingConfig {
        max_new_tokens: new_tokens,
        temperature: 1.0,
        seed: 1,
        ..SamplingConfig::default()
    };
    generate(model, &prompts[..prompts.len().min(2)], 0, &sampling, 0)?;
    let started = Instant::now();
    let mut generated = 0;
    for round in 0..rounds {
        let round_sampling = SamplingConfig {
            seed: round,
            ..sampling.clone()
        };
        let out = generate(model, prompts, 0, &round_sampling, 0)?;
        generated += out.tokens.iter().map(Vec::len).sum::<usize>();
    }
    Ok(generated as f64 / started.elapsed().as_secs_f64())
}

/// Tokens/s of `steps` supervised steps (after one untimed step).
fn training_speed(
    trainer: &mut Trainer,
    prompts: &[Vec<u32>],
    targets: &[Vec<u32>],
    steps: usize,
) -> anyhow::Result<f64> {
    futures::executor::block_on(trainer.sft_step(prompts.to_vec(), targets.to_vec()))?;
    let started = Instant::now();
    for _ in 0..steps {
        futures::executor::block_on(trainer.sft_step(prompts.to_vec(), targets.to_vec()))?;
    }
    let tokens: usize = prompts.iter().chain(targets).map(Vec::len).sum::<usize>() * steps;
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

fn measure_small(name: &str, config: ModelConfig) -> anyhow::Result<serde_json::Value> {
    let model = Decoder::new(&config, DType::F32, &Device::Cpu, 1)?;
    let prompts: Vec<Vec<u32>> = (0..32)
        .map(|i| (0..8).map(|j| 3 + ((i * 7 + j * 3) % 20) as u32).collect())
        .collect();
    let generation_tokens_per_s = generation_speed(&model, &prompts, 64, 3)?;
    let mut trainer = trainer_for(model, &config);
    let targets: Vec<Vec<u32>> = (0..32)
        .map(|i| (0..64).map(|j| 3 + ((i + j * 5) % 20) as u32).collect())
        .collect();
    let training_tokens_per_s = training_speed(&mut trainer, &prompts, &targets, 3)?;
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

/// A field of /proc/self/status in bytes (VmRSS, VmHWM).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Writes the Qwen2.5-0.5B-shaped checkpoint (bf16) unless one of this config is there.
fn ensure_checkpoint(dir: &Path, config: &ModelConfig) -> anyhow::Result<()> {
    let wanted = config.to_json(DType::BF16);
    let existing = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    if existing.as_ref() == Some(&wanted) && dir.join("model.safetensors").is_file() {
        return Ok(());
    }
    println!(
        "writing a {}-parameter bf16 checkpoint to {} ...",
        config.num_parameters(),
        dir.display()
    );
    let started = Instant::now();
    let model = Decoder::new(config, DType::BF16, &Device::Cpu, 7)?;
    save_pretrained(&model, dir, None)?;
    println!("  written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// In a fresh process: load `dir` to run in `dtype`, then generate and train; prints one JSON
/// line.
fn measure_checkpoint_child(dir: &Path, dtype: DType) -> anyhow::Result<()> {
    let baseline = proc_status_bytes("VmRSS");
    let started = Instant::now();
    let model = load_pretrained(dir, dtype, &Device::Cpu)?;
    let load_s = started.elapsed().as_secs_f64();
    let peak_after_load = proc_status_bytes("VmHWM");
    let resident_after_load = proc_status_bytes("VmRSS");
    let config = model.config().clone();
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            (0..16)
                .map(|j| 100 + ((i * 7919 + j * 104_729) % 150_000) as u32)
                .collect()
        })
        .collect();
    let generation_tokens_per_s = generation_speed(&model, &prompts, 16, 1)?;
    let mut trainer = trainer_for(model, &config);
    let train_prompts = prompts[..2].to_vec();
    let targets: Vec<Vec<u32>> = (0..2)
        .map(|i| {
            (0..16)
                .map(|j| 200 + ((i * 31 + j * 977) % 150_000) as u32)
                .collect()
        })
        .collect();
    let training_tokens_per_s = training_speed(&mut trainer, &train_prompts, &targets, 1)?;
    let report = serde_json::json!({
        "dtype": format!("{dtype:?}").to_lowercase(),
        "load_s": load_s,
        "rss_before_load_bytes": baseline,
        "peak_rss_after_load_bytes": peak_after_load,
        "rss_after_load_bytes": resident_after_load,
        "peak_rss_after_training_bytes": proc_status_bytes("VmHWM"),
        "generation_tokens_per_s": generation_tokens_per_s,
        "training_tokens_per_s": training_tokens_per_s,
    });
    println!("{report}");
    Ok(())
}

fn measure_qwen() -> anyhow::Result<serde_json::Value> {
    let config = qwen_half_billion();
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/model_speed/qwen2.5-0.5b-shape");
    ensure_checkpoint(&dir, &config)?;
    let checkpoint_bytes = directory_bytes(&dir);
    // Read once so the page cache is warm: the load time is then the loader's, not the disk's
    // (a cold read of the 1 GB file took about 20 s on this machine's disk).
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "safetensors") {
            std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
        }
    }
    let mut runs = Vec::new();
    for dtype in ["f32", "bf16"] {
        let output = std::process::Command::new(std::env::current_exe()?)
            .args([CHILD_FLAG, &dir.to_string_lossy(), dtype])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "the {dtype} measurement failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let mut run: serde_json::Value = serde_json::from_str(line)?;
        let model_bytes = config.num_parameters() as f64 * if dtype == "f32" { 4.0 } else { 2.0 };
        let peak = run["peak_rss_after_load_bytes"].as_f64().unwrap_or(0.0);
        run["model_bytes_in_run_dtype"] = serde_json::json!(model_bytes);
        run["peak_over_checkpoint"] = serde_json::json!(peak / checkpoint_bytes as f64);
        run["peak_over_model_bytes"] = serde_json::json!(peak / model_bytes);
        println!(
            "qwen2.5-0.5b shape, {dtype:<4}: load {:.2} s, peak RSS {:.2} GB = {:.2}x the {:.2} GB checkpoint \
             ({:.2}x the model in {dtype}); generation {:.1} tokens/s, training {:.1} tokens/s",
            run["load_s"].as_f64().unwrap_or(0.0),
            peak / 1e9,
            peak / checkpoint_bytes as f64,
            checkpoint_bytes as f64 / 1e9,
            peak / model_bytes,
            run["generation_tokens_per_s"].as_f64().unwrap_or(0.0),
            run["training_tokens_per_s"].as_f64().unwrap_or(0.0),
        );
        runs.push(run);
    }
    Ok(serde_json::json!({
        "name": "qwen2.5-0.5b shape",
        "parameters": config.num_parameters(),
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_dtype": "bf16",
        "page_cache": "warm: the checkpoint is read through once before the measurements",
        "generation": "batch 4, 16-token prompts, 16 new tokens, KV cache",
        "training": "2 sequences x 32 tokens, forward + backward + AdamW",
        "runs": runs,
    }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == CHILD_FLAG) {
        let dir = PathBuf::from(args.get(at + 1).expect("a checkpoint directory"));
        let dtype = match args.get(at + 2).map(String::as_str) {
            Some("bf16") => DType::BF16,
            _ => DType::F32,
        };
        return measure_checkpoint_child(&dir, dtype);
    }
    let only = args
        .iter()
        .position(|arg| arg == "--only")
        .and_then(|at| args.get(at + 1))
        .cloned();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("CPU threads: {threads}");
    let mut results = Vec::new();
    if only.as_deref() != Some("qwen") {
        results.push(measure_small("recipe (2 x 256)", model_config(2, 768))?);
        results.push(measure_small("4 layers x 256", model_config(4, 1024))?);
    }
    if only.as_deref() != Some("small") {
        results.push(measure_qwen()?);
    }
    if let Some(path) = troupe::report::json_path_arg() {
        let report = serde_json::json!({ "bench": "model_speed", "device": "cpu", "threads": threads, "models": results });
        println!(
            "wrote {}",
            troupe::report::write_json(&path, &report)?.display()
        );
    }
    Ok(())
}
