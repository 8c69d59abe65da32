//! The data plane's values: `Batch`, a columnar table of named tensor columns plus per-row
//! metadata and step-level metadata (`StepMeta`), moved as raw bytes, with ragged columns for
//! rows of different lengths.

mod batch;
mod ragged;
mod step_meta;

pub use batch::{split_ranges, Batch, BatchError, Column, ColumnType, RowMeta};
pub use step_meta::StepMeta;
