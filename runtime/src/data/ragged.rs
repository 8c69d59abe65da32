//! Ragged columns: rows of different lengths (token sequences, per-token log-probabilities) in a
//! fixed-width column, so that batches from different ranks still concatenate. Each row is its
//! length followed by `width` slots; the slots past the length are zero.

use super::batch::{Batch, BatchError, ColumnType};
use bytes::{BufMut, BytesMut};

fn too_long(name: &str, row: usize, len: usize, width: usize) -> BatchError {
    BatchError::Column {
        column: name.to_string(),
        why: format!("row {row} holds {len} values, more than the column's width {width}"),
    }
}

/// Checks `name` exists with `dtype` and returns its width and raw rows.
fn ragged_rows<'a>(
    batch: &'a Batch,
    name: &str,
    dtype: ColumnType,
) -> Result<(usize, Vec<&'a [u8]>), BatchError> {
    let wrong = |why: String| BatchError::Column {
        column: name.to_string(),
        why,
    };
    let column = batch
        .column(name)
        .ok_or_else(|| wrong("no such column".to_string()))?;
    if column.dtype != dtype || column.row_shape.len() != 1 || column.row_shape[0] == 0 {
        return Err(wrong(format!(
            "holds {:?} rows of shape {:?}, not a ragged {dtype:?} column",
            column.dtype, column.row_shape
        )));
    }
    let width = column.row_shape[0] - 1;
    let row_bytes = column.row_shape[0] * 4;
    Ok((width, column.data.chunks_exact(row_bytes).collect()))
}

fn length_of(name: &str, row: usize, raw: &[u8], width: usize) -> Result<usize, BatchError> {
    let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    if len > width {
        return Err(too_long(name, row, len, width));
    }
    Ok(len)
}

/// An element type a ragged column can hold (4 bytes, little-endian).
trait RaggedElement: Copy {
    const TYPE: ColumnType;
    fn put(self, bytes: &mut BytesMut);
    fn read(bytes: &[u8]) -> Self;
}

impl RaggedElement for u32 {
    const TYPE: ColumnType = ColumnType::U32;
    fn put(self, bytes: &mut BytesMut) {
        bytes.put_u32_le(self);
    }
    fn read(b: &[u8]) -> Self {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl RaggedElement for f32 {
    const TYPE: ColumnType = ColumnType::F32;
    fn put(self, bytes: &mut BytesMut) {
        bytes.put_f32_le(self);
    }
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

fn with_ragged<T: RaggedElement>(
    batch: Batch,
    name: &str,
    rows: &[Vec<T>],
    width: usize,
) -> Result<Batch, BatchError> {
    let mut bytes = BytesMut::with_capacity(rows.len() * (width + 1) * 4);
    for (index, row) in rows.iter().enumerate() {
        if row.len() > width {
            return Err(too_long(name, index, row.len(), width));
        }
        bytes.put_u32_le(row.len() as u32);
        row.iter().for_each(|value| value.put(&mut bytes));
        bytes.put_bytes(0, (width - row.len()) * 4);
    }
    batch.with_column(name, T::TYPE, &[width + 1], bytes.freeze())
}

fn ragged<T: RaggedElement>(batch: &Batch, name: &str) -> Result<Vec<Vec<T>>, BatchError> {
    let (width, raw_rows) = ragged_rows(batch, name, T::TYPE)?;
    raw_rows
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let len = length_of(name, index, raw, width)?;
            Ok(raw[4..4 + len * 4].chunks_exact(4).map(T::read).collect())
        })
        .collect()
}

impl Batch {
    /// Adds a ragged u32 column (token sequences) of `width` slots per row.
    pub fn with_ragged_u32(
        self,
        name: &str,
        rows: &[Vec<u32>],
        width: usize,
    ) -> Result<Self, BatchError> {
        with_ragged(self, name, rows, width)
    }

    /// A ragged u32 column's rows.
    pub fn ragged_u32(&self, name: &str) -> Result<Vec<Vec<u32>>, BatchError> {
        ragged(self, name)
    }

    /// Adds a ragged f32 column (the length prefix is stored as the bits of a u32).
    pub fn with_ragged_f32(
        self,
        name: &str,
        rows: &[Vec<f32>],
        width: usize,
    ) -> Result<Self, BatchError> {
        with_ragged(self, name, rows, width)
    }

    /// A ragged f32 column's rows.
    pub fn ragged_f32(&self, name: &str) -> Result<Vec<Vec<f32>>, BatchError> {
        ragged(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_rows_survive_split_and_concat() {
        let tokens = vec![vec![1, 2, 3], vec![], vec![7]];
        let logprobs = vec![vec![-0.5_f32, -1.0, -2.0], vec![], vec![-0.25]];
        let batch = Batch::new(3)
            .with_ragged_u32("response", &tokens, 4)
            .unwrap()
            .with_ragged_f32("logprob", &logprobs, 4)
            .unwrap();
        assert_eq!(batch.ragged_u32("response").unwrap(), tokens);
        assert_eq!(batch.ragged_f32("logprob").unwrap(), logprobs);
        let parts = batch.split(2).unwrap();
        assert_eq!(parts[1].ragged_u32("response").unwrap(), vec![vec![7]]);
        let back = Batch::concat(&parts).unwrap();
        assert_eq!(back.ragged_u32("response").unwrap(), tokens);
    }

    #[test]
    fn bad_ragged_input_is_named() {
        let err = Batch::new(1)
            .with_ragged_u32("response", &[vec![1, 2, 3]], 2)
            .unwrap_err();
        assert!(err.to_string().contains("response") && err.to_string().contains("width 2"));
        let plain = Batch::new(1).with_f32("reward", &[], &[1.0]).unwrap();
        assert!(plain.ragged_f32("reward").is_err());
        assert!(plain.ragged_u32("missing").is_err());
        // A corrupt length prefix (from a peer) is refused, not trusted.
        let corrupt = Batch::new(1)
            .with_column(
                "response",
                ColumnType::U32,
                &[2],
                bytes::Bytes::from(vec![9, 0, 0, 0, 1, 0, 0, 0]),
            )
            .unwrap();
        assert!(corrupt.ragged_u32("response").is_err());
    }
}
