//! Why a recipe stopped, with the cause kept as a source chain (print it with `{:#}` through
//! anyhow, or walk `std::error::Error::source`).

use crate::error::ModelError;

/// Why a recipe stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// Boxed: the runtime's error is large, and recipes pass results around a lot.
    #[error(transparent)]
    Troupe(Box<troupe::Error>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Pipeline(#[from] troupe::pipeline::PipelineError),
    #[error(transparent)]
    Batch(#[from] troupe::data::BatchError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("recovering from a failure: {why}")]
    Recovery { why: String },
}

impl From<troupe::Error> for RecipeError {
    fn from(err: troupe::Error) -> Self {
        RecipeError::Troupe(Box::new(err))
    }
}

impl RecipeError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RecipeError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, RecipeError>;
