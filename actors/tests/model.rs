//! Correctness of the decoder: gradients reach every parameter and match central finite
//! differences (float64, fourth-order stencil), logits match an independent NumPy implementation, the KV cache gives
//! the logits of a full recomputation, save-then-load (single file and sharded) is exact, and
//! generation is seeded, batch-independent and reports the log-probabilities it sampled with.

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;
use troupe_actors::generate::{generate, sequence_logprobs, SamplingConfig};
use troupe_actors::model::{attention_mask, KvCache, PaddedBatch};
use troupe_actors::weights::{load_pretrained, save_pretrained};
use troupe_actors::{Decoder, ModelConfig};

fn tiny(tied: bool, qkv_bias: bool) -> ModelConfig {
    let mut config = ModelConfig::tiny(13, 8, 2, 2, 1);
    config.intermediate_size = 12;
    config.tie_word_embeddings = tied;
    config.attention_bias = qkv_bias;
    config.max_position_embeddings = 64;
    config
}

/// Every optional piece at once: Qwen3's per-head norms and explicit head_dim, attention biases
/// on q, k, v and o, MLP biases, the erf GELU, YaRN RoPE and a sliding window in the second
/// layer.
fn everything() -> ModelConfig {
    let mut config = tiny(false, true);
    config.family = troupe_actors::config::Family::Qwen3;
    config.qk_norm = true;
    config.head_dim = 6;
    config.mlp_bias = false;
    config.hidden_act = troupe_actors::config::Activation::GeluErf;
    config.rope_scaling = troupe_actors::config::RopeScaling::Yarn {
        factor: Some(4.0),
        original_max_position_embeddings: 16.0,
        attention_factor: None,
        beta_fast: None,
        beta_slow: None,
        mscale: None,
        mscale_all_dim: None,
        truncate: true,
    };
    config.sliding_window = Some(2);
    config.layer_types = vec![
        troupe_actors::config::LayerAttention::Full,
        troupe_actors::config::LayerAttention::Sliding,
    ];
    config
}

/// Llama with MLP biases and the tanh GELU.
fn llama_mlp_bias() -> ModelConfig {
    let mut config = tiny(true, true);
    config.mlp_bias = true;
    config.hidden_act = troupe_actors::config::Activation::GeluTanh;
    config
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("troupe-model-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A fixed scalar function of the logits: sum of logits times fixed pseudo-random weights,
/// over real (unpadded) positions only.
fn probe_loss(model: &Decoder, batch: &PaddedBatch) -> Tensor {
    let logits = model.forward_batch(batch).expect("forward");
    let (b, t, v) = logits.dims3().expect("dims");
    let weights: Vec<f64> = (0..b * t * v)
        .map(|i| ((i * 7919) % 97) as f64 / 97.0 - 0.5)
        .collect();
    let weights = Tensor::from_vec(weights, (b, t, v), &Device::Cpu).expect("weights");
    let valid: Vec<f64> = batch
        .valid
        .iter()
        .flatten()
        .map(|ok| f64::from(u8::from(*ok)))
        .collect();
    let valid = Tensor::from_vec(valid, (b, t, 1), &Device::Cpu).expect("valid");
    (logits * weights)
        .expect("mul")
        .broadcast_mul(&valid)
        .expect("mask")
        .sum_all()
        .expect("sum")
}

fn scalar(x: &Tensor) -> f64 {
    x.to_scalar::<f64>().expect("scalar")
}

#[test]
fn every_parameter_gets_a_gradient_matching_finite_differences() {
    for (name, config) in [
        ("untied, biased", tiny(false, true)),
        ("tied, no bias", tiny(true, false)),
        ("qwen3 + yarn + sliding + gelu", everything()),
        ("llama mlp bias + gelu tanh", llama_mlp_bias()),
    ] {
        let (case, bias) = (name, config.attention_bias);
        let model = Decoder::new(&config, DType::F64, &Device::Cpu, 7).expect("model");
        let batch = PaddedBatch::left_padded(&[vec![1, 5, 9, 2], vec![3, 4]], 0).expect("batch");
        let loss = probe_loss(&model, &batch);
        let grads = loss.backward().expect("backward");
        let vars = model.named_vars();
        assert_eq!(
            vars.iter()
                .map(|(n, v)| (n.clone(), v.dims().to_vec()))
                .collect::<Vec<_>>(),
            config.parameter_shapes(),
            "the decoder builds exactly the parameters its config lists"
        );
        let mut worst = 0.0_f64;
        for (name, var) in &vars {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("parameter {name} got no gradient"));
            let grad: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                grad.iter().any(|g| *g != 0.0),
                "parameter {name} got an all-zero gradient"
            );
            // A deep copy: `Var::set` writes into the storage that clones of the tensor share.
            let original = var.as_tensor().copy().unwrap();
            let values: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
            // Check the largest-gradient element and two others of each parameter.
            let largest = (0..grad.len())
                .max_by(|a, b| grad[*a].abs().total_cmp(&grad[*b].abs()))
                .unwrap();
            for index in [largest, 0, values.len() / 2] {
                // Loss at values[index] + offset.
                let at = |offset: f64| -> f64 {
                    let mut shifted = values.clone();
                    shifted[index] += offset;
                    var.set(&Tensor::from_vec(shifted, original.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    scalar(&probe_loss(&model, &batch))
                };
                // Fourth-order central difference: truncation error O(h^4), so a step large
                // enough to keep rounding noise far below the tolerance.
                let h = 1e-4;
                let numeric = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
                var.set(&original.copy().unwrap()).unwrap();
                assert_eq!(
                    scalar(&probe_loss(&model, &batch)),
                    scalar(&loss),
                    "parameter restored"
                );
                let analytic = grad[index];
                let scale = numeric.abs().max(analytic.abs());
                if scale < 1e-7 {
                    continue;
                }
                let relative = (numeric - analytic).abs() / scale;
                worst = worst.max(relative);
                assert!(
                    relative < 1e-4,
                    "{name}[{index}] ({case}): analytic {analytic} vs numeric {numeric} (relative error {relative})"
                );
            }
        }
        println!(
            "{case} (attention bias {bias}): worst relative error {worst:e} over {} parameters",
            vars.len()
        );
    }
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("TROUPE_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

#[test]
fn logits_match_an_independent_numpy_forward() {
    for (tied, bias) in [(true, false), (false, true)] {
        let model = Decoder::new(&tiny(tied, bias), DType::F32, &Device::Cpu, 11).expect("model");
        let dir = scratch(&format!("numpy-{tied}"));
        save_pretrained(&model, &dir, None).expect("save");
        let ids = vec![vec![1_u32, 4, 7, 10, 12, 3], vec![2, 2, 8, 0, 5, 11]];
        std::fs::write(
            dir.join("input.json"),
            serde_json::json!({ "ids": ids }).to_string(),
        )
        .expect("input");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference_forward.py");
        let output = std::process::Command::new(python())
            .arg(&script)
            .arg(&dir)
            .arg(dir.join("input.json"))
            .arg(dir.join("output.json"))
            .output()
            .expect("run python (scripts/test.sh installs numpy into .venv)");
        assert!(
            output.status.success(),
            "the NumPy reference failed (scripts/test.sh installs numpy into .venv): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("output.json")).expect("output"),
        )
        .expect("json");
        let batch = PaddedBatch::left_padded(&ids, 0).expect("batch");
        let ours = model
            .forward_batch(&batch)
            .expect("forward")
            .to_vec3::<f32>()
            .expect("logits");
        let mut worst = 0.0_f64;
        for (b, rows) in ours.iter().enumerate() {
            for (t, row) in rows.iter().enumerate() {
                for (v, value) in row.iter().enumerate() {
                    let want = reference["logits"][b][t][v].as_f64().expect("number");
                    let diff = (*value as f64 - want).abs() / want.abs().max(1.0);
                    worst = worst.max(diff);
                }
            }
        }
        assert!(
            worst < 1e-4,
            "logits differ from NumPy by up to {worst} (tied={tied})"
        );
        println!("tied={tied}: worst difference from NumPy {worst:e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn kv_cache_gives_the_logits_of_a_full_recomputation() {
    kv_cache_matches(tiny(true, true));
    // A sliding window of 2 in the second layer: the cache must still give the windowed result.
    kv_cache_matches(everything());
}

fn kv_cache_matches(config: ModelConfig) {
    let model = Decoder::new(&config, DType::F64, &Device::Cpu, 3).expect("model");
    let sequences = vec![vec![1_u32, 5, 9, 2, 7, 7, 3], vec![4, 6, 8, 10, 12]];
    let full_batch = PaddedBatch::left_padded(&sequences, 0).expect("batch");
    let full = model
        .forward_batch(&full_batch)
        .expect("full")
        .to_vec3::<f64>()
        .expect("vec");
    // Prefill the first 3 columns, then one column at a time through the cache.
    let width = full_batch.width();
    let prefix = 3;
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let positions = full_batch.positions();
    let column = |from: usize, to: usize| -> (Tensor, Tensor, Tensor) {
        let ids: Vec<u32> = full_batch
            .ids
            .iter()
            .flat_map(|row| row[from..to].to_vec())
            .collect();
        let pos: Vec<u32> = positions
            .iter()
            .flat_map(|row| row[from..to].to_vec())
            .collect();
        let valid: Vec<Vec<bool>> = full_batch
            .valid
            .iter()
            .map(|row| row[..to].to_vec())
            .collect();
        let n = to - from;
        (
            Tensor::from_vec(ids, (2, n), &Device::Cpu).unwrap(),
            Tensor::from_vec(pos, (2, n), &Device::Cpu).unwrap(),
            attention_mask(&valid, n, DType::F64, &Device::Cpu).unwrap(),
        )
    };
    let (ids, pos, mask) = column(0, prefix);
    let mut incremental = model
        .forward(&ids, &pos, &mask, Some(&mut cache))
        .unwrap()
        .to_vec3::<f64>()
        .unwrap();
    for step in prefix..width {
        let (ids, pos, mask) = column(step, step + 1);
        let logits = model
            .forward(&ids, &pos, &mask, Some(&mut cache))
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        for (row, more) in logits.into_iter().enumerate() {
            incremental[row].extend(more);
        }
    }
    assert_eq!(cache.len(), width);
    for (row, valid) in full_batch.valid.iter().enumerate() {
        for (t, real) in valid.iter().enumerate() {
            if !real {
                continue;
            }
            for (a, b) in full[row][t].iter().zip(&incremental[row][t]) {
                assert!((a - b).abs() < 1e-10, "row {row} column {t}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn save_then_load_gives_identical_logits_single_and_sharded() {
    let model = Decoder::new(&tiny(false, true), DType::F32, &Device::Cpu, 5).expect("model");
    let batch = PaddedBatch::left_padded(&[vec![1, 2, 3, 4], vec![5, 6]], 0).expect("batch");
    let before = model
        .forward_batch(&batch)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    for shard in [None, Some(1500)] {
        let dir = scratch(&format!("save-{shard:?}"));
        save_pretrained(&model, &dir, shard).expect("save");
        if shard.is_some() {
            assert!(dir.join("model.safetensors.index.json").is_file());
            let shards = std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("model-")
                })
                .count();
            assert!(shards > 1, "expected several shards, got {shards}");
        }
        let loaded = load_pretrained(&dir, DType::F32, &Device::Cpu).expect("load");
        let after = loaded
            .forward_batch(&batch)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        assert_eq!(before, after, "shard limit {shard:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let dir = scratch("bad");
    std::fs::write(dir.join("config.json"), "{\"vocab_size\": 0}").unwrap();
    let err = load_pretrained(&dir, DType::F32, &Device::Cpu)
        .err()
        .expect("bad config");
    assert!(err.to_string().contains("config"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generation_is_seeded_batch_independent_and_reports_its_logprobs() {
    let model = Decoder::new(&tiny(true, false), DType::F32, &Device::Cpu, 9).expect("model");
    let prompts = vec![vec![1_u32, 5, 9, 2], vec![4, 6], vec![3]];
    let sampling = SamplingConfig {
        max_new_tokens: 6,
        temperature: 1.0,
        top_k: Some(8),
        top_p: Some(0.95),
        stop_tokens: vec![12],
        seed: 42,
    };
    let first = generate(&model, &prompts, 0, &sampling, 3).expect("generate");
    let again = generate(&model, &prompts, 0, &sampling, 3).expect("generate");
    assert_eq!(first, again, "same seed, same output");
    assert_eq!(first.weight_version, 3);
    let other = generate(
        &model,
        &prompts,
        0,
        &SamplingConfig {
            seed: 43,
            ..sampling.clone()
        },
        3,
    )
    .expect("generate");
    assert_ne!(first.tokens, other.tokens, "another seed, other samples");
    for (row, tokens) in first.tokens.iter().enumerate() {
        assert!(!tokens.is_empty() && tokens.len() <= 6);
        if first.stopped[row] {
            assert_eq!(tokens.last(), Some(&12));
        }
    }
    // Greedy decoding of a prompt alone equals its row in a padded batch.
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 5,
        ..SamplingConfig::default()
    };
    let together = generate(&model, &prompts, 0, &greedy, 0).expect("batch");
    for (row, prompt) in prompts.iter().enumerate() {
        let alone = generate(&model, std::slice::from_ref(prompt), 0, &greedy, 0).expect("alone");
        assert_eq!(
            alone.tokens[0], together.tokens[row],
            "row {row} depends on its batch"
        );
    }
    // The reported log-probs are those of the policy (temperature 1) on prompt + response.
    let plain = SamplingConfig {
        top_k: None,
        top_p: None,
        ..sampling
    };
    let sampled = generate(&model, &prompts, 0, &plain, 0).expect("generate");
    for (row, prompt) in prompts.iter().enumerate() {
        let sequence = [prompt.clone(), sampled.tokens[row].clone()].concat();
        let batch = PaddedBatch::left_padded(std::slice::from_ref(&sequence), 0).unwrap();
        let logp = sequence_logprobs(&model, &batch)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let response_logp = &logp[0][prompt.len() - 1..];
        for (a, b) in response_logp.iter().zip(&sampled.logprobs[row]) {
            assert!(
                (a - b).abs() < 1e-4,
                "row {row}: recomputed {a} vs sampled {b}"
            );
        }
    }
    let err = generate(&model, &[vec![99]], 0, &greedy, 0).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}
