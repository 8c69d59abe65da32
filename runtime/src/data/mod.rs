//! The data plane's values: `Batch`, a columnar table of named tensor columns plus per-row
//! metadata, moved as raw bytes, with ragged columns for rows of different lengths.

mod batch;
mod ragged;

pub use batch::{Batch, BatchError, Column, ColumnType, RowMeta};
