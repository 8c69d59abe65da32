//! troupe's wire protocol: the messages and gRPC services of proto/troupe/v1, generated at build
//! time. Nothing here is written by hand except this module tree.

#![allow(clippy::all, missing_docs)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("troupe.v1");
}

pub use v1::*;
