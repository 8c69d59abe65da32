//! The column names the RL roles read and write in a pipeline step, in one place, so stages and
//! roles agree on them.

/// Prompt token ids (ragged u32, `<bos>` first).
pub const PROMPT: &str = "prompt";
/// The index of each row's problem in its task (u32), for whoever judges the answers.
pub const PROBLEM: &str = "problem";
/// Response token ids (ragged u32, the end-of-sequence token included when generation stopped).
pub const RESPONSE: &str = "response";
/// Per-token log-probabilities of the responses under the weights that sampled them.
pub const OLD_LOGPROB: &str = "old_logprob";
/// Per-token log-probabilities under the frozen reference.
pub const REF_LOGPROB: &str = "ref_logprob";
/// One reward per response (f32).
pub const REWARD: &str = "reward";
/// One advantage per response (f32).
pub const ADVANTAGE: &str = "advantage";
/// The learned reward model's score of each response (f32).
pub const RM_SCORE: &str = "rm_score";
/// The critic's value before each response token (ragged f32).
pub const VALUE: &str = "value";
/// The GAE return of each response token (ragged f32).
pub const RETURN: &str = "return";
