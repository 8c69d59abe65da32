//! vLLM as a rollout engine: `VllmEngine` starts and supervises one vLLM engine in a Python child
//! process (`host.py`, embedded), feeds it token ids and takes back token ids with the sampled
//! tokens' log-probabilities, loads new weights into it in place and checks them on a probe, and
//! starts it again (with the current weights) when it dies. Every wait has a deadline; every
//! error names the engine, the actor and the cause.
//!
//! The engine runs in a child process of the actor's worker, not as vLLM's HTTP server: the
//! in-process engine generates faster on the same model, takes token ids and returns
//! log-probabilities without a tokenizer or a port, and its weights reload through one call.

mod export;
mod process;
pub mod python_env;

use crate::error::{ModelError, Result};
use crate::generate::{Generation, SamplingConfig};
use crate::model::{Decoder, PaddedBatch};
use process::{HostFailure, HostProcess};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const HOST_SCRIPT: &str = include_str!("host.py");

/// How to run the engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VllmConfig {
    /// The Python to use; else `TROUPE_VLLM_PYTHON`, else the cached venv (made if missing).
    pub python: Option<PathBuf>,
    /// Making the venv the first time on a machine (a 6 GB install).
    pub setup_timeout_s: f64,
    /// From starting the process to the engine's first generation.
    pub start_timeout_s: f64,
    /// Any one request (a generation, a weight load).
    pub request_timeout_s: f64,
    /// The engine's dtype as vLLM names it (`float32`, `bfloat16`).
    pub dtype: String,
    /// KV-cache space on CPU, GiB (vLLM's `VLLM_CPU_KVCACHE_SPACE`; its default is 4).
    pub cpu_kv_cache_gib: u32,
    /// Share of GPU memory the engine may take (GPU only).
    pub gpu_memory_utilization: f64,
    /// Skip CUDA graphs and compilation: a much faster start.
    pub enforce_eager: bool,
    /// The difference allowed between the engine's and the trainer's log-probabilities of the
    /// probe after a weight update, nats (`with_dtype` sets it for the dtype): the largest one
    /// in float32, the mean one otherwise (`probe_by_mean`).
    pub probe_tolerance: f64,
    /// Judge the probe by its mean difference rather than its largest (16-bit engines, whose
    /// rounding makes single positions jump).
    #[serde(default)]
    pub probe_by_mean: bool,
    /// Restarts allowed over the engine's life before an error is final.
    pub max_restarts: u32,
}

impl VllmConfig {
    /// The engine in `dtype` (as vLLM names it), with a probe check to match. A float32 engine
    /// matches the float32 trainer to rounding: the largest difference must stay below 2e-3
    /// nats. A bfloat16 engine does not: on the recipe's run its largest probe difference
    /// wandered from 0.005 to 0.37 nats from step to step while its sampled tokens stayed within
    /// 0.006 nats of the trainer's on average (KL 6e-5), so a 16-bit probe is judged by its mean
    /// difference, within 0.1 nats: it catches gross errors only (a stale tied output head was
    /// off by up to 2 nats in issue 18's trial).
    pub fn with_dtype(dtype: &str) -> Self {
        let full = dtype == "float32" || dtype == "float";
        VllmConfig {
            dtype: dtype.to_string(),
            probe_tolerance: if full { 2e-3 } else { 0.1 },
            probe_by_mean: !full,
            ..VllmConfig::default()
        }
    }
}

impl Default for VllmConfig {
    fn default() -> Self {
        VllmConfig {
            python: None,
            setup_timeout_s: 1800.0,
            start_timeout_s: 300.0,
            request_timeout_s: 300.0,
            dtype: "float32".to_string(),
            cpu_kv_cache_gib: 1,
            gpu_memory_utilization: 0.5,
            enforce_eager: true,
            probe_tolerance: 2e-3,
            probe_by_mean: false,
            max_restarts: 3,
        }
    }
}

/// What an engine has cost and done so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EngineStats {
    /// The last start's seconds, from spawning the process to ready.
    pub start_s: f64,
    pub starts: u32,
    pub restarts: u32,
    /// The last weight update: writing the weights, the engine's reload, and the probe.
    pub weight_update_ms: f64,
    /// The probe's largest difference after the last update, nats.
    pub probe_abs_diff: f64,
    pub version: u64,
    pub pid: Option<u32>,
    /// vLLM's version, as the engine reported it.
    pub vllm_version: String,
}

/// One vLLM engine, owned by a rollout actor.
pub struct VllmEngine {
    config: VllmConfig,
    /// Who owns it, for errors and logs.
    actor: String,
    python: PathBuf,
    script: PathBuf,
    /// What the engine (re)starts from: the directory it was started on, until the first
    /// weight update; `weights_dir` after.
    model_dir: PathBuf,
    /// The engine's own checkpoint in shared memory, which weight updates rewrite; removed on
    /// drop.
    weights_dir: PathBuf,
    max_model_len: usize,
    seed: u64,
    /// The names and shapes of the engine's weights, when known: an update must match them
    /// (vLLM's in-place reload does not check, and a mismatch half-loads).
    shapes: Option<std::collections::BTreeMap<String, Vec<usize>>>,
    host: Option<HostProcess>,
    stats: EngineStats,
}

/// The actor this process serves, as errors name it.
fn this_actor() -> String {
    std::env::var("TROUPE_WORKER_ACTOR_ID")
        .unwrap_or_else(|_| format!("pid {}", std::process::id()))
}

impl VllmEngine {
    /// Finds or makes the Python, writes `model` (stamped `version`) where the engine reads it,
    /// and starts the engine.
    pub async fn start(
        model: &Decoder,
        version: u64,
        seed: u64,
        config: VllmConfig,
    ) -> Result<Self> {
        let weights_dir = export::checkpoint_dir(&format!("{:x}", rand::random::<u64>()));
        export::write_checkpoint(model, &weights_dir)?;
        let mut engine = Self::start_on(
            weights_dir.clone(),
            weights_dir,
            model.config().max_position_embeddings,
            version,
            seed,
            config,
        )
        .await?;
        engine.shapes = Some(export::engine_shapes(model)?);
        Ok(engine)
    }

    /// Starts an engine on a Hugging Face checkpoint directory as it is (version 0): vLLM reads
    /// it, and refuses it with its own reason. Weight updates go to a copy in shared memory;
    /// `dir` is never written.
    pub async fn start_serving(
        dir: &std::path::Path,
        max_model_len: usize,
        seed: u64,
        config: VllmConfig,
    ) -> Result<Self> {
        let weights_dir = export::checkpoint_dir(&format!("{:x}", rand::random::<u64>()));
        Self::start_on(
            dir.to_path_buf(),
            weights_dir,
            max_model_len,
            0,
            seed,
            config,
        )
        .await
    }

    async fn start_on(
        model_dir: PathBuf,
        weights_dir: PathBuf,
        max_model_len: usize,
        version: u64,
        seed: u64,
        config: VllmConfig,
    ) -> Result<Self> {
        let actor = this_actor();
        let python = python_env::find_or_make(
            config.python.as_deref(),
            Duration::from_secs_f64(config.setup_timeout_s),
        )
        .await
        .map_err(|cause| engine_error(&actor, cause))?;
        let script = weights_dir.with_extension("host.py");
        std::fs::write(&script, HOST_SCRIPT)
            .map_err(|err| ModelError::io(format!("writing {}", script.display()), err))?;
        let mut engine = VllmEngine {
            config,
            actor,
            python,
            script,
            model_dir,
            weights_dir,
            max_model_len,
            seed,
            shapes: None,
            host: None,
            stats: EngineStats {
                version,
                ..EngineStats::default()
            },
        };
        engine.launch().await?;
        Ok(engine)
    }

    /// Starts the host on the checkpoint as it is now.
    async fn launch(&mut self) -> Result<()> {
        let settings = json!({
            "model": self.model_dir,
            "dtype": self.config.dtype,
            "max_model_len": self.max_model_len,
            "seed": self.seed,
            "enforce_eager": self.config.enforce_eager,
            "gpu_memory_utilization": self.config.gpu_memory_utilization,
            // Removed by the host if the actor dies without removing them itself.
            "leftovers": [self.weights_dir, self.script],
        });
        let env = vec![
            // The engine core in the host process itself: one process to supervise and kill.
            (
                "VLLM_ENABLE_V1_MULTIPROCESSING".to_string(),
                "0".to_string(),
            ),
            (
                "VLLM_CPU_KVCACHE_SPACE".to_string(),
                self.config.cpu_kv_cache_gib.to_string(),
            ),
            // The actor's CPU share is its thread count (OMP_NUM_THREADS, inherited); pinning
            // to cores would put every engine of a node on the same ones.
            (
                "VLLM_CPU_OMP_THREADS_BIND".to_string(),
                "nobind".to_string(),
            ),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ];
        let started = Instant::now();
        let (host, ready) = HostProcess::start(
            &self.python,
            &self.script,
            &settings,
            &env,
            Duration::from_secs_f64(self.config.start_timeout_s),
        )
        .await
        .map_err(|failure| {
            engine_error(
                &self.actor,
                format!(
                    "starting on {} with {}: {failure}",
                    self.model_dir.display(),
                    self.python.display()
                ),
            )
        })?;
        self.stats.start_s = started.elapsed().as_secs_f64();
        self.stats.starts += 1;
        self.stats.pid = host.pid();
        self.stats.vllm_version = ready
            .get("vllm")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
        tracing::info!(
            actor = %self.actor,
            pid = ?host.pid(),
            vllm = %self.stats.vllm_version,
            seconds = self.stats.start_s,
            "vLLM engine ready"
        );
        self.host = Some(host);
        Ok(())
    }

    /// Sends one request; when the engine has died or hangs, starts it again (its model
    /// directory always holds the current weights) and sends the request once more.
    async fn request(&mut self, request: &Value) -> Result<Value> {
        match self.try_request(request).await {
            Err(failure) if failure.needs_restart() => {
                if self.stats.restarts >= self.config.max_restarts {
                    return Err(engine_error(
                        &self.actor,
                        format!(
                            "{failure} (after {} restarts, no more are allowed)",
                            self.stats.restarts
                        ),
                    ));
                }
                tracing::warn!(actor = %self.actor, %failure, "vLLM engine lost; starting it again");
                if let Some(host) = self.host.take() {
                    host.stop().await;
                }
                self.stats.restarts += 1;
                self.launch().await?;
                self.try_request(request)
                    .await
                    .map_err(|failure| engine_error(&self.actor, failure.to_string()))
            }
            other => other.map_err(|failure| engine_error(&self.actor, failure.to_string())),
        }
    }

    async fn try_request(&mut self, request: &Value) -> Result<Value, HostFailure> {
        let timeout = Duration::from_secs_f64(self.config.request_timeout_s);
        let Some(host) = self.host.as_mut() else {
            return Err(HostFailure::Died {
                status: "it was not running".to_string(),
                tail: String::new(),
            });
        };
        host.call(request, timeout).await
    }

    /// Samples a continuation of every prompt (row `i` seeded with `sampling.seed` mixed with
    /// `i`, so equal prompts draw different samples); log-probabilities are of the distribution
    /// sampled from (temperature, top-k and top-p applied).
    pub async fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        sampling: &SamplingConfig,
    ) -> Result<Generation> {
        sampling.validate()?;
        if prompts.is_empty() {
            return Ok(Generation {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                stopped: Vec::new(),
                weight_version: self.stats.version,
            });
        }
        let seeds: Vec<u64> = (0..prompts.len() as u64)
            .map(|row| {
                sampling
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(row)
                    % (1 << 62)
            })
            .collect();
        let answer = self
            .request(&json!({
                "op": "generate",
                "prompts": prompts,
                "seeds": seeds,
                "temperature": sampling.temperature,
                "top_k": sampling.top_k,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens,
                "stop_token_ids": sampling.stop_tokens,
            }))
            .await?;
        let tokens: Vec<Vec<u32>> = answer_field(&answer, "tokens", &self.actor)?;
        let logprobs: Vec<Vec<f32>> = answer_field(&answer, "logprobs", &self.actor)?;
        let stopped: Vec<bool> = answer_field(&answer, "stopped", &self.actor)?;
        if tokens.len() != prompts.len()
            || logprobs.len() != prompts.len()
            || stopped.len() != prompts.len()
            || tokens
                .iter()
                .zip(&logprobs)
                .any(|(t, l)| t.len() != l.len())
        {
            return Err(engine_error(
                &self.actor,
                format!(
                    "{} prompts gave {} responses and {} log-probability rows",
                    prompts.len(),
                    tokens.len(),
                    logprobs.len()
                ),
            ));
        }
        Ok(Generation {
            tokens,
            logprobs,
            stopped,
            weight_version: self.stats.version,
        })
    }

    /// The engine's log p(tokens[j] | tokens[..j]) for j >= 1.
    pub async fn prompt_logprobs(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let answer = self
            .request(&json!({"op": "prompt_logprobs", "tokens": tokens}))
            .await?;
        answer_field(&answer, "logprobs", &self.actor)
    }

    /// Loads `model`'s weights into the engine in place, stamps them `version`, and checks them:
    /// the engine's log-probabilities of a probe sequence must match `model`'s.
    pub async fn load_weights(&mut self, model: &Decoder, version: u64) -> Result<EngineStats> {
        let started = Instant::now();
        if let Some(held) = &self.shapes {
            let mut offered = export::engine_shapes(model)?;
            // An engine started on a tied checkpoint holds no output head of its own: the
            // untied copy is written anyway, and a restart from it unties the engine.
            if !held.contains_key(export::OUTPUT_HEAD) {
                offered.remove(export::OUTPUT_HEAD);
            }
            if let Some(why) = export::shape_mismatch(held, &offered) {
                return Err(engine_error(
                    &self.actor,
                    format!("refusing version {version}: {why}"),
                ));
            }
        }
        if self.weights_dir.join("config.json").is_file() {
            export::write_weights(model, &self.weights_dir)?;
        } else {
            export::write_checkpoint(model, &self.weights_dir)?;
        }
        self.request(&json!({
            "op": "load_weights",
            "path": self.weights_dir,
            "version": version,
        }))
        .await?;
        // A restart from here on starts from the weights just loaded.
        self.model_dir = self.weights_dir.clone();
        self.stats.version = version;
        let mut difference = self.probe_difference(model).await?;
        if difference > self.config.probe_tolerance
            && self.stats.restarts < self.config.max_restarts
        {
            // The engine took the file but does not serve it: start it again on the file (a
            // fresh load) rather than keep a wrong engine in service.
            tracing::warn!(actor = %self.actor, difference, "probe failed after a reload; restarting the engine");
            if let Some(host) = self.host.take() {
                host.stop().await;
            }
            self.stats.restarts += 1;
            self.launch().await?;
            difference = self.probe_difference(model).await?;
        }
        self.stats.probe_abs_diff = difference;
        self.stats.weight_update_ms = started.elapsed().as_secs_f64() * 1e3;
        if difference > self.config.probe_tolerance {
            // Never serve weights that failed the check.
            if let Some(host) = self.host.take() {
                host.stop().await;
            }
            return Err(engine_error(
                &self.actor,
                format!(
                    "after loading version {version}, the engine's log-probabilities of the probe \
                     differ from the trainer's by {} {difference:.4} nats (allowed {}): it is \
                     not serving the weights it was given",
                    if self.config.probe_by_mean {
                        "on average"
                    } else {
                        "up to"
                    },
                    self.config.probe_tolerance
                ),
            ));
        }
        Ok(self.stats.clone())
    }

    /// The largest (or, with `probe_by_mean`, the mean) difference between the engine's and
    /// `model`'s log-probabilities over the probe: a fixed 4-token start and `model`'s own greedy continuation of it (12 tokens),
    /// judged on the continuation. Likely tokens have log-probabilities near 0, which a 16-bit
    /// engine reproduces closely; on tokens the model finds unlikely (-10 nats and below) its
    /// rounding alone reaches tenths of a nat, hiding real errors.
    pub async fn probe_difference(&mut self, model: &Decoder) -> Result<f64> {
        let start = probe_tokens(model.config().vocab_size, 4);
        let continuation = self.max_model_len.saturating_sub(start.len()).clamp(1, 12);
        let greedy = SamplingConfig {
            max_new_tokens: continuation,
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        let made = crate::generate::generate(model, std::slice::from_ref(&start), 0, &greedy, 0)?;
        let mut probe = start.clone();
        probe.extend(made.tokens.into_iter().next().unwrap_or_default());
        let engine = self.prompt_logprobs(&probe).await?;
        let batch = PaddedBatch::left_padded(std::slice::from_ref(&probe), 0)?;
        let ours = crate::generate::sequence_logprobs(model, &batch)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if ours.len() != engine.len() {
            return Err(engine_error(
                &self.actor,
                format!(
                    "the probe gave {} engine log-probabilities for {} of the model's",
                    engine.len(),
                    ours.len()
                ),
            ));
        }
        // Positions start.len() - 1 on predict the continuation.
        let judged = start.len().saturating_sub(1);
        let differences: Vec<f64> = ours
            .iter()
            .zip(&engine)
            .skip(judged)
            .map(|(a, b)| f64::from((a - b).abs()))
            .collect();
        Ok(if self.config.probe_by_mean {
            differences.iter().sum::<f64>() / differences.len().max(1) as f64
        } else {
            differences.iter().copied().fold(0.0, f64::max)
        })
    }

    /// Asks the engine for its version: a health check with the request deadline.
    pub async fn health(&mut self) -> Result<u64> {
        if let Some(host) = self.host.as_mut() {
            if host.has_exited() {
                tracing::warn!(actor = %self.actor, "vLLM engine found dead by the health check");
            }
        }
        self.request(&json!({"op": "ping"})).await?;
        Ok(self.stats.version)
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.clone()
    }

    /// Stops the engine and removes its files.
    pub async fn stop(mut self) {
        if let Some(host) = self.host.take() {
            host.stop().await;
        }
    }
}

impl Drop for VllmEngine {
    fn drop(&mut self) {
        // The host is killed by its own drop (kill_on_drop); the files go here.
        let _ = std::fs::remove_dir_all(&self.weights_dir);
        let _ = std::fs::remove_file(&self.script);
    }
}

/// A fixed sequence covering the vocabulary (a stride prime to common sizes), `length` long.
fn probe_tokens(vocab: usize, length: usize) -> Vec<u32> {
    (0..length.max(2))
        .map(|i| ((i * 7 + 3) % vocab.max(1)) as u32)
        .collect()
}

/// Field `name` of an engine's answer, as `T`.
fn answer_field<T: serde::de::DeserializeOwned>(
    answer: &Value,
    name: &str,
    actor: &str,
) -> Result<T> {
    let value = answer
        .get(name)
        .cloned()
        .ok_or_else(|| engine_error(actor, format!("an answer without `{name}`: {answer}")))?;
    serde_json::from_value(value)
        .map_err(|err| engine_error(actor, format!("an answer's `{name}`: {err}")))
}

fn engine_error(actor: &str, cause: impl Into<String>) -> ModelError {
    ModelError::Engine {
        engine: "vLLM".to_string(),
        actor: actor.to_string(),
        cause: cause.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for Python: a shell script (it ignores the host script and settings).
    fn fake_python(name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("troupe-fake-{name}-{}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config_with(python: PathBuf, start_timeout_s: f64) -> VllmConfig {
        VllmConfig {
            python: Some(python),
            start_timeout_s,
            ..VllmConfig::default()
        }
    }

    #[tokio::test]
    async fn a_broken_python_is_an_error_naming_its_exit_and_output() {
        let python = fake_python("broken", "echo 'No module named vllm' >&2; exit 1");
        let dir = std::env::temp_dir();
        let error = VllmEngine::start_serving(&dir, 64, 0, config_with(python.clone(), 30.0))
            .await
            .err()
            .expect("a Python that exits cannot start an engine")
            .to_string();
        let _ = std::fs::remove_file(&python);
        for part in [
            "vLLM engine of actor",
            "exit code 1",
            "No module named vllm",
        ] {
            assert!(error.contains(part), "`{part}` missing: {error}");
        }
    }

    #[tokio::test]
    async fn an_engine_that_never_gets_ready_times_out_and_is_killed() {
        let python = fake_python("stuck", "echo 'loading forever' >&2; exec sleep 600");
        let dir = std::env::temp_dir();
        let started = Instant::now();
        let error = VllmEngine::start_serving(&dir, 64, 0, config_with(python.clone(), 2.0))
            .await
            .err()
            .expect("an engine that never answers cannot start")
            .to_string();
        let _ = std::fs::remove_file(&python);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        for part in ["no answer within 2 s", "start", "loading forever"] {
            assert!(error.contains(part), "`{part}` missing: {error}");
        }
    }

    #[test]
    fn the_probe_stays_in_the_vocabulary() {
        let probe = probe_tokens(25, 16);
        assert_eq!(probe.len(), 16);
        assert!(probe.iter().all(|&t| t < 25));
        assert!(probe.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn engine_errors_name_the_engine_the_actor_and_the_cause() {
        let error = engine_error("actor-7", "the model has no config.json").to_string();
        for part in ["vLLM", "actor-7", "no config.json"] {
            assert!(error.contains(part), "{error}");
        }
    }
}
