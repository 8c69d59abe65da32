//! The data plane's values: `Batch`, a columnar table of named tensor columns plus per-row
//! metadata and step-level metadata (`StepMeta`), moved as raw bytes, with ragged columns for
//! rows of different lengths.

mod batch;
mod ragged;
mod step_meta;
mod values;

pub use batch::{Batch, BatchError, Column, ColumnType, RowMeta};
pub use step_meta::StepMeta;
pub use values::split_ranges;
