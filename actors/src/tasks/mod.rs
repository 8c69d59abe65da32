//! Synthetic tasks the recipes learn: problem generators with held-out splits, their prompts
//! and answers in the built-in tokenizer, and how a response is judged.

pub mod arithmetic;
