//! One value per row: u32 columns (problem indexes, counts), and how a step's rows are cut
//! over ranks (`split_ranges`, which every producer and consumer of a split stage agrees on).

use super::{Batch, BatchError, ColumnType};
use bytes::{BufMut, BytesMut};

/// The rows `0..rows` cut into `parts` contiguous near-equal ranges, in order (the first ones
/// one row longer when it does not divide; empty ranges when there are more parts than rows).
/// Every split of rows over ranks uses this, so producers and consumers agree on who holds what.
pub fn split_ranges(rows: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    let (base, extra) = (rows / parts, rows % parts);
    let mut from = 0;
    (0..parts)
        .map(|part| {
            let to = from + base + usize::from(part < extra);
            let range = from..to;
            from = to;
            range
        })
        .collect()
}

impl Batch {
    /// Adds a u32 column from values, one per row (indexes, counts).
    pub fn with_u32(self, name: &str, values: &[u32]) -> Result<Self, BatchError> {
        let mut bytes = BytesMut::with_capacity(values.len() * 4);
        for value in values {
            bytes.put_u32_le(*value);
        }
        self.with_column(name, ColumnType::U32, &[], bytes.freeze())
    }

    /// A u32 column's values, one per row.
    pub fn u32_values(&self, name: &str) -> Result<Vec<u32>, BatchError> {
        let column = self.column(name).ok_or_else(|| BatchError::Column {
            column: name.to_string(),
            why: "no such column".to_string(),
        })?;
        if column.dtype != ColumnType::U32 || !column.row_shape.is_empty() {
            return Err(BatchError::Column {
                column: name.to_string(),
                why: format!(
                    "holds {:?} rows of shape {:?}, not one U32 per row",
                    column.dtype, column.row_shape
                ),
            });
        }
        Ok(column
            .data
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_rows_in_order() {
        assert_eq!(split_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(split_ranges(1, 3), vec![0..1, 1..1, 1..1]);
        let batch = Batch::new(3).with_u32("i", &[7, 8, 9]).unwrap();
        assert_eq!(batch.u32_values("i").unwrap(), vec![7, 8, 9]);
        assert!(batch.f32_values("i").is_err() && batch.u32_values("j").is_err());
    }
}
