//! The data plane's values: `Batch`, a columnar table of named tensor columns plus per-row
//! metadata, moved as raw bytes.

mod batch;

pub use batch::{Batch, BatchError, Column, ColumnType, RowMeta};
