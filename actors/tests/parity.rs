//! Parity with Hugging Face transformers, the reference: `tests/parity/make_references.py` (run
//! with the pinned torch + transformers of `scripts/parity_env.sh`) builds random-weight Llama,
//! Qwen2, Qwen3 and Mistral checkpoints for every supported setting with `save_pretrained`
//! (f32, bf16, f16, sharded, both config layouts) and records their logits and 16 greedy tokens
//! for single prompts and a left-padded batch. Here each checkpoint is loaded and must match
//! within 1e-4 with identical greedy tokens; every unsupported setting must be refused naming
//! the field (or tensor); a 2,048-token prompt, a tied config with a different stored head and a
//! directory holding both checkpoint layouts must give transformers' logits too; the byte-level
//! BPE tokenizers and chat templates must give
//! transformers' ids and text; and a recipe-style checkpoint written here must load in
//! transformers with the same tokenizer ids and logits.
//!
//! Needs `TROUPE_PARITY_PYTHON` (scripts/test.sh sets it from scripts/parity_env.sh).

use candle_core::{DType, Device};
use serde_json::Value;
use std::path::{Path, PathBuf};
use troupe_actors::generate::{generate, SamplingConfig};
use troupe_actors::tokenizer::{
    write_builtin_tokenizer, BuiltinTokenizer, HfTokenizer, TextTokenizer,
};
use troupe_actors::weights::{load_pretrained, save_pretrained};
use troupe_actors::{Decoder, PaddedBatch};

const TOLERANCE: f64 = 1e-4;

fn python() -> PathBuf {
    match std::env::var_os("TROUPE_PARITY_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "TROUPE_PARITY_PYTHON is not set: run `bash scripts/test.sh`, or set it to the path \
             `bash scripts/parity_env.sh` prints"
        ),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("troupe-parity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run_python(args: &[&Path]) {
    let output = std::process::Command::new(python())
        .args(args)
        .env("OMP_NUM_THREADS", "2")
        .output()
        .expect("start the parity python");
    assert!(
        output.status.success(),
        "{:?} failed:\n{}\n{}",
        args.first(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("a list of ids")
        .iter()
        .map(|v| v.as_u64().expect("an id") as u32)
        .collect()
}

fn matrix(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|v| v.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}

/// Largest absolute difference between our logits rows and the reference's.
fn worst_difference(ours: &[Vec<f32>], reference: &[Vec<f64>]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "position count");
    let mut worst = 0.0_f64;
    for (a, b) in ours.iter().zip(reference) {
        assert_eq!(a.len(), b.len(), "vocabulary size");
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((*x as f64 - y).abs());
        }
    }
    worst
}

/// Logits at the real positions of each prompt of a left-padded batch.
fn batch_logits(model: &Decoder, prompts: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let batch = PaddedBatch::left_padded(prompts, 0).expect("batch");
    let logits = model
        .forward_batch(&batch)
        .expect("forward")
        .to_dtype(DType::F32)
        .expect("f32")
        .to_vec3::<f32>()
        .expect("logits");
    logits
        .into_iter()
        .zip(&batch.valid)
        .map(|(rows, valid)| {
            rows.into_iter()
                .zip(valid)
                .filter(|(_, real)| **real)
                .map(|(row, _)| row)
                .collect()
        })
        .collect()
}

fn greedy(model: &Decoder, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let sampling = SamplingConfig {
        max_new_tokens: 16,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    generate(model, prompts, 0, &sampling, 0)
        .expect("generate")
        .tokens
}

/// Checks one accepted case; returns the worst f32 logit difference, and how far our bf16 run
/// and transformers' are from the f32 logits.
fn check_case(dir: &Path, name: &str) -> (f64, f64, f64) {
    let reference = read_json(&dir.join("reference.json"));
    let model = load_pretrained(dir, DType::F32, &Device::Cpu)
        .unwrap_or_else(|err| panic!("{name}: transformers' checkpoint was refused: {err}"));
    let mut worst = 0.0_f64;
    for single in reference["single"].as_array().expect("single") {
        let prompt = ids(&single["ids"]);
        let ours = batch_logits(&model, std::slice::from_ref(&prompt));
        worst = worst.max(worst_difference(&ours[0], &matrix(&single["logits"])));
        assert_eq!(
            greedy(&model, std::slice::from_ref(&prompt))[0],
            ids(&single["greedy"]),
            "{name}: greedy tokens of {prompt:?}"
        );
    }
    let batch = &reference["batch"];
    let prompts: Vec<Vec<u32>> = batch["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(ids)
        .collect();
    let ours = batch_logits(&model, &prompts);
    for (row, logits) in ours.iter().enumerate() {
        worst = worst.max(worst_difference(logits, &matrix(&batch["logits"][row])));
    }
    let tokens = greedy(&model, &prompts);
    for (row, want) in batch["greedy"]
        .as_array()
        .expect("greedy")
        .iter()
        .enumerate()
    {
        assert_eq!(
            tokens[row],
            ids(want),
            "{name}: batch greedy tokens, row {row}"
        );
    }
    assert!(
        worst < TOLERANCE,
        "{name}: logits differ from transformers by {worst:e}"
    );

    // The same checkpoint run in bf16, against transformers run in bf16: the two round
    // differently (so not within 1e-4), but ours must be no further from the f32 logits than
    // transformers' own bf16 run is, give or take half of that.
    let half = load_pretrained(dir, DType::BF16, &Device::Cpu).expect("bf16 load");
    let ours = batch_logits(&half, &prompts);
    let (mut half_worst, mut theirs_worst, mut between) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (row, logits) in ours.iter().enumerate() {
        let want = matrix(&batch["logits"][row]);
        let theirs = matrix(&batch["bf16_logits"][row]);
        half_worst = half_worst.max(worst_difference(logits, &want));
        between = between.max(worst_difference(logits, &theirs));
        let theirs_f32: Vec<Vec<f32>> = theirs
            .iter()
            .map(|r| r.iter().map(|v| *v as f32).collect())
            .collect();
        theirs_worst = theirs_worst.max(worst_difference(&theirs_f32, &want));
    }
    assert!(
        half_worst <= 1.5 * theirs_worst + 1e-3,
        "{name}: our bf16 logits are {half_worst} from f32, transformers' bf16 {theirs_worst} \
         (and {between} from each other)"
    );
    (worst, half_worst, theirs_worst)
}

/// A case of `extra_cases.py`: one unpadded prompt, logits from position `logits_from` on.
fn check_extra_case(dir: &Path, name: &str) -> f64 {
    let reference = read_json(&dir.join("reference.json"));
    let model = load_pretrained(dir, DType::F32, &Device::Cpu)
        .unwrap_or_else(|err| panic!("{name}: transformers' checkpoint was refused: {err}"));
    let prompt = ids(&reference["ids"]);
    let from = reference["logits_from"].as_u64().expect("logits_from") as usize;
    let ours = batch_logits(&model, std::slice::from_ref(&prompt));
    let worst = worst_difference(&ours[0][from..], &matrix(&reference["logits"]));
    assert!(
        worst < TOLERANCE,
        "{name}: logits differ from transformers by {worst:e}"
    );
    worst
}

fn check_refusal(dir: &Path, name: &str, must_mention: &[String]) {
    let err = match load_pretrained(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{name}: an unsupported checkpoint was accepted"),
        Err(err) => err.to_string(),
    };
    for word in must_mention {
        assert!(
            err.contains(word.as_str()),
            "{name}: the refusal does not mention {word:?}: {err}"
        );
    }
    println!("refused {name:<32} {err}");
}

fn check_tokenizer(dir: &Path, name: &str) {
    let expected = read_json(&dir.join("expected.json"));
    let tokenizer = HfTokenizer::from_dir(dir).unwrap_or_else(|err| panic!("{name}: {err}"));
    for case in expected["encode"].as_array().expect("encode") {
        let text = case["text"].as_str().expect("text");
        let special = case["add_special_tokens"].as_bool().expect("flag");
        assert_eq!(
            tokenizer.encode_with(text, special).expect("encode"),
            ids(&case["ids"]),
            "{name}: ids of {text:?} (add_special_tokens {special})"
        );
    }
    for case in expected["decode"].as_array().expect("decode") {
        let skip = case["skip_special_tokens"].as_bool().expect("flag");
        assert_eq!(
            tokenizer
                .decode_with(&ids(&case["ids"]), skip)
                .expect("decode"),
            case["text"].as_str().expect("text"),
            "{name}: decode (skip_special_tokens {skip})"
        );
    }
    let template = tokenizer.chat_template().expect("a chat template");
    for case in expected["chat"].as_array().expect("chat") {
        // As JSON text: serde_json's maps sort keys, and `tojson` must keep the document's order.
        let messages = case["messages_json"]
            .as_str()
            .expect("messages_json")
            .to_string();
        let tools = case["tools_json"].as_str().map(str::to_string);
        let generation = case["add_generation_prompt"].as_bool().expect("flag");
        let text = template
            .render_json(&messages, tools.as_deref(), generation)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            text,
            case["text"].as_str().expect("text"),
            "{name}: chat text of {messages}"
        );
    }
}

/// A checkpoint written here (recipe layout: weights, config, the built-in tokenizer) loads in
/// transformers with the same token ids and logits.
fn check_recipe_checkpoint() {
    let dir = scratch("recipe");
    let task = troupe_actors::tasks::arithmetic::AdditionTask::new(10, 0).expect("task");
    let config = troupe_actors::recipes::policy::small_model(&task);
    let model = Decoder::new(&config, DType::F32, &Device::Cpu, 17).expect("model");
    save_pretrained(&model, &dir, None).expect("save");
    write_builtin_tokenizer(&dir, config.max_position_embeddings).expect("tokenizer");
    let texts = ["123+456=", "7 + 80 = 87?"];
    std::fs::write(
        dir.join("input.json"),
        serde_json::json!({ "texts": texts }).to_string(),
    )
    .unwrap();
    run_python(&[
        &script("check_checkpoint.py"),
        &dir,
        &dir.join("input.json"),
        &dir.join("output.json"),
    ]);
    let output = read_json(&dir.join("output.json"));
    let builtin = BuiltinTokenizer::new();
    for (index, text) in texts.iter().enumerate() {
        let ours = builtin.encode(text).expect("encode");
        assert_eq!(
            ids(&output["ids"][index]),
            ours,
            "transformers' ids of {text:?}"
        );
        assert_eq!(output["decoded"][index].as_str(), Some(*text));
        let logits = batch_logits(&model, std::slice::from_ref(&ours));
        let worst = worst_difference(&logits[0], &matrix(&output["logits"][index]));
        assert!(
            worst < TOLERANCE,
            "recipe checkpoint: transformers' logits differ by {worst:e}"
        );
        println!("recipe checkpoint {text:?}: worst logit difference {worst:.2e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoints_match_transformers_or_are_refused() {
    let out = scratch("references");
    let started = std::time::Instant::now();
    run_python(&[&script("make_references.py"), &out]);
    println!(
        "references made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let manifest = read_json(&out.join("manifest.json"));
    let cases = manifest["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15, "the suite lost cases: {}", cases.len());
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (worst, half, theirs) = check_case(&out.join(case["dir"].as_str().expect("dir")), name);
        println!(
            "{name:<30} {:<8} {:<3} f32 worst {worst:.2e}   bf16 from f32 {half:.3} (transformers' bf16: {theirs:.3})",
            case["disk_dtype"].as_str().unwrap_or("?"),
            case["config_layout"].as_str().unwrap_or("?")
        );
    }
    for case in manifest["extra_cases"].as_array().expect("extra_cases") {
        let name = case["name"].as_str().expect("name");
        let worst = check_extra_case(&out.join(case["dir"].as_str().expect("dir")), name);
        println!(
            "{name:<30} f32 worst {worst:.2e}   ({})",
            case["what"].as_str().unwrap_or("")
        );
    }
    let refusals = manifest["refusals"].as_array().expect("refusals");
    assert!(
        refusals.len() >= 10,
        "the suite lost refusals: {}",
        refusals.len()
    );
    for refusal in refusals {
        let name = refusal["name"].as_str().expect("name");
        let words: Vec<String> = refusal["must_mention"]
            .as_array()
            .expect("must_mention")
            .iter()
            .map(|w| w.as_str().expect("word").to_string())
            .collect();
        check_refusal(
            &out.join(refusal["dir"].as_str().expect("dir")),
            name,
            &words,
        );
    }
    let tokenizers = manifest["tokenizers"].as_array().expect("tokenizers");
    assert!(tokenizers.len() >= 2);
    for tokenizer in tokenizers {
        let name = tokenizer["name"].as_str().expect("name");
        check_tokenizer(&out.join(tokenizer["dir"].as_str().expect("dir")), name);
        println!("tokenizer {name}: ids, decoding and chat text match transformers");
    }
    check_recipe_checkpoint();
    let _ = std::fs::remove_dir_all(&out);
}
