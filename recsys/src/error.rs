//! The errors of embedding tables, trainers and serving replicas.

/// What went wrong in the recommendation stack; each names its input.
#[derive(Debug, thiserror::Error)]
pub enum RecsysError {
    /// A feature id the table cannot take (an undeclared slot, a value out of range).
    #[error("feature id {id:#x}: {why}")]
    BadFeature { id: u64, why: String },
    /// Lookups or gradients that do not match in length or width.
    #[error("bad batch: {0}")]
    BadBatch(String),
    /// A replica asked for changes older than the shard still holds.
    #[error("shard {shard}: changes after version {after} are no longer held (oldest held: {oldest}); a full copy comes with the next seal")]
    TooFarBehind { shard: u32, after: u64, oldest: u64 },
    /// A replica asked for a version the shard has not sealed (it restarted, or the seal failed).
    #[error("shard {shard}: version {wanted} is not sealed (last seal: {sealed})")]
    NotSealed {
        shard: u32,
        wanted: u64,
        sealed: u64,
    },
    /// A replica asked the trainer for dense parameters of a version it does not hold.
    #[error("the trainer holds no dense parameters of version {wanted} (newest sealed: {newest})")]
    DenseNotSealed { wanted: u64, newest: u64 },
    /// A version that is not served yet.
    #[error("version {wanted} is not served yet (serving {serving})")]
    NotServedYet { wanted: u64, serving: u64 },
    /// A checkpoint or update log that cannot be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or log record that does not decode.
    #[error("{what} {path}: {why}")]
    Corrupt {
        what: &'static str,
        path: String,
        why: String,
    },
    /// A call to another actor failed.
    #[error("{what}: {source}")]
    Call {
        what: String,
        #[source]
        source: Box<troupe::Error>,
    },
    /// The data set is missing, malformed or has columns this reader does not know.
    #[error("data set: {0}")]
    Data(String),
}

impl RecsysError {
    pub(crate) fn call(what: impl Into<String>) -> impl FnOnce(troupe::Error) -> RecsysError {
        let what = what.into();
        move |source| RecsysError::Call {
            what,
            source: Box::new(source),
        }
    }
}
