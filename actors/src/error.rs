//! Errors of the model and role code.

/// What went wrong loading, running or training a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("invalid checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{context}")]
    Collective {
        context: String,
        #[source]
        source: troupe::collective::CollectiveError,
    },
    /// A call to another actor, or a step's data, failed (boxed: the runtime's error is large).
    #[error(transparent)]
    Cluster(Box<troupe::Error>),
    #[error(transparent)]
    Batch(#[from] troupe::data::BatchError),
    /// An inference engine the role drives (vLLM) failed to start, answer or load weights.
    #[error("{engine} engine of actor {actor}: {cause}")]
    Engine {
        engine: String,
        actor: String,
        cause: String,
    },
}

impl From<troupe::Error> for ModelError {
    fn from(err: troupe::Error) -> Self {
        ModelError::Cluster(Box::new(err))
    }
}

impl ModelError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ModelError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result of model and role code.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
