//! Actor-call streams, caller side: one long-lived bidirectional gRPC stream per worker this
//! process talks to, with calls pipelined over it and replies matched by call id.

mod connection;
pub mod keep_awake;

pub use connection::{bytes_received, bytes_sent};
pub(crate) use connection::{CallOutcome, Connection, LinkError};

/// The gRPC metadata key that names the caller (its session) on a call stream.
pub(crate) const CALLER_HEADER: &str = "troupe-caller";
