//! Inference engines a rollout can generate with instead of its own candle decoder: vLLM
//! (`vllm`), run in a child process the rollout supervises.

pub mod vllm;
