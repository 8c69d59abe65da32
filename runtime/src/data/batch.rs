//! `Batch`: rows of named tensor columns (each with an element type and a per-row shape) plus
//! per-row metadata (strings by key) and step-level metadata (`StepMeta`: step, weight version,
//! scalars) shared by every row. Split across ranks,
//! concatenated back, selected and repeated by rows, and encoded as a small header followed by
//! each column's raw little-endian bytes, never element by element.

use super::StepMeta;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Element types of columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    U32,
    U8,
}

impl ColumnType {
    pub fn size(self) -> usize {
        match self {
            ColumnType::F64 | ColumnType::I64 => 8,
            ColumnType::F32 | ColumnType::I32 | ColumnType::U32 => 4,
            ColumnType::F16 | ColumnType::BF16 => 2,
            ColumnType::U8 => 1,
        }
    }
}

/// One column: every row holds `row_shape` elements of `dtype`, rows back to back in `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub dtype: ColumnType,
    pub row_shape: Vec<usize>,
    pub data: Bytes,
}

impl Column {
    fn row_bytes(&self) -> usize {
        self.row_shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// Metadata of one row.
pub type RowMeta = BTreeMap<String, String>;

/// A batch operation that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("column `{column}`: {why}")]
    Column { column: String, why: String },
    #[error("{0}")]
    Shape(String),
    #[error("encoded batch: {0}")]
    Decode(String),
}

/// A columnar table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    rows: usize,
    columns: BTreeMap<String, Column>,
    meta: Vec<RowMeta>,
    step: StepMeta,
}

#[derive(Serialize, Deserialize)]
struct Header {
    rows: usize,
    columns: Vec<(String, ColumnType, Vec<usize>)>,
    meta: Vec<RowMeta>,
    step: StepMeta,
}

impl Batch {
    /// An empty batch of `rows` rows (columns are added with `with_column`).
    pub fn new(rows: usize) -> Self {
        Batch {
            rows,
            columns: BTreeMap::new(),
            meta: vec![RowMeta::new(); rows],
            step: StepMeta::default(),
        }
    }

    /// The step-level metadata every row shares.
    pub fn step_meta(&self) -> &StepMeta {
        &self.step
    }

    pub fn step_meta_mut(&mut self) -> &mut StepMeta {
        &mut self.step
    }

    /// The batch with `step` as its step-level metadata.
    pub fn with_step_meta(mut self, step: StepMeta) -> Self {
        self.step = step;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.get(name)
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.keys().map(String::as_str)
    }

    pub fn meta(&self) -> &[RowMeta] {
        &self.meta
    }

    /// Sets one metadata value on every row.
    pub fn set_meta_all(&mut self, key: &str, value: &str) {
        for row in &mut self.meta {
            row.insert(key.to_string(), value.to_string());
        }
    }

    pub fn meta_mut(&mut self) -> &mut [RowMeta] {
        &mut self.meta
    }

    /// Adds (or replaces) a column from raw bytes; checks they fill exactly `rows` rows.
    pub fn with_column(
        mut self,
        name: &str,
        dtype: ColumnType,
        row_shape: &[usize],
        data: Bytes,
    ) -> Result<Self, BatchError> {
        let column = Column {
            dtype,
            row_shape: row_shape.to_vec(),
            data,
        };
        let expected = column.row_bytes() * self.rows;
        if column.data.len() != expected {
            return Err(BatchError::Column {
                column: name.to_string(),
                why: format!(
                    "{} bytes for {} rows of {:?} {dtype:?} ({expected} expected)",
                    column.data.len(),
                    self.rows,
                    row_shape
                ),
            });
        }
        self.columns.insert(name.to_string(), column);
        Ok(self)
    }

    /// Adds an f32 column from values, row after row.
    pub fn with_f32(
        self,
        name: &str,
        row_shape: &[usize],
        values: &[f32],
    ) -> Result<Self, BatchError> {
        let mut bytes = BytesMut::with_capacity(values.len() * 4);
        for value in values {
            bytes.put_f32_le(*value);
        }
        self.with_column(name, ColumnType::F32, row_shape, bytes.freeze())
    }

    /// An f32 column's values, row after row.
    pub fn f32_values(&self, name: &str) -> Result<Vec<f32>, BatchError> {
        let column = self.columns.get(name).ok_or_else(|| BatchError::Column {
            column: name.to_string(),
            why: "no such column".to_string(),
        })?;
        if column.dtype != ColumnType::F32 {
            return Err(BatchError::Column {
                column: name.to_string(),
                why: format!("holds {:?}, not F32", column.dtype),
            });
        }
        Ok(column
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Only the named columns (metadata kept).
    pub fn project(&self, names: &[String]) -> Result<Batch, BatchError> {
        let mut columns = BTreeMap::new();
        for name in names {
            let column = self.columns.get(name).ok_or_else(|| BatchError::Column {
                column: name.clone(),
                why: "no such column".to_string(),
            })?;
            columns.insert(name.clone(), column.clone());
        }
        Ok(Batch {
            rows: self.rows,
            columns,
            meta: self.meta.clone(),
            step: self.step.clone(),
        })
    }

    /// Adds `other`'s columns (same number of rows; its columns replace same-named ones) and
    /// merges its row metadata and its step figures in (this batch's step, version and figures
    /// stay where both have them).
    pub fn merge(&mut self, other: Batch) -> Result<(), BatchError> {
        if other.rows != self.rows {
            return Err(BatchError::Shape(format!(
                "{} rows merged into a batch of {}",
                other.rows, self.rows
            )));
        }
        self.columns.extend(other.columns);
        self.step.fill_from(&other.step);
        for (mine, theirs) in self.meta.iter_mut().zip(other.meta) {
            mine.extend(theirs);
        }
        Ok(())
    }

    /// Rows in `indexes` order (repeats allowed).
    pub fn select(&self, indexes: &[usize]) -> Result<Batch, BatchError> {
        if let Some(bad) = indexes.iter().find(|index| **index >= self.rows) {
            return Err(BatchError::Shape(format!(
                "row {bad} of a batch of {}",
                self.rows
            )));
        }
        let mut columns = BTreeMap::new();
        for (name, column) in &self.columns {
            let width = column.row_bytes();
            let mut data = BytesMut::with_capacity(width * indexes.len());
            for index in indexes {
                data.extend_from_slice(&column.data[index * width..(index + 1) * width]);
            }
            columns.insert(
                name.clone(),
                Column {
                    data: data.freeze(),
                    ..column.clone()
                },
            );
        }
        Ok(Batch {
            rows: indexes.len(),
            columns,
            meta: indexes
                .iter()
                .map(|index| self.meta[*index].clone())
                .collect(),
            step: self.step.clone(),
        })
    }

    /// Rows `[from, to)`, sharing the column bytes (no copy).
    pub fn slice(&self, from: usize, to: usize) -> Result<Batch, BatchError> {
        if from > to || to > self.rows {
            return Err(BatchError::Shape(format!(
                "rows {from}..{to} of a batch of {}",
                self.rows
            )));
        }
        let columns = self
            .columns
            .iter()
            .map(|(name, column)| {
                let width = column.row_bytes();
                (
                    name.clone(),
                    Column {
                        data: column.data.slice(from * width..to * width),
                        ..column.clone()
                    },
                )
            })
            .collect();
        Ok(Batch {
            rows: to - from,
            columns,
            meta: self.meta[from..to].to_vec(),
            step: self.step.clone(),
        })
    }

    /// `parts` contiguous near-equal pieces (see [`super::split_ranges`]), sharing the column
    /// bytes.
    pub fn split(&self, parts: usize) -> Result<Vec<Batch>, BatchError> {
        if parts == 0 {
            return Err(BatchError::Shape("split into 0 parts".to_string()));
        }
        super::split_ranges(self.rows, parts)
            .into_iter()
            .map(|range| self.slice(range.start, range.end))
            .collect()
    }

    /// Batches with the same columns, one after the other; the first batch's step and version,
    /// and every batch's figures (the first holder of a name wins: pieces of one batch carry
    /// copies of its figures, which do not add up).
    pub fn concat(batches: &[Batch]) -> Result<Batch, BatchError> {
        let Some(first) = batches.first() else {
            return Ok(Batch::default());
        };
        let mut columns = BTreeMap::new();
        for (name, column) in &first.columns {
            let mut data = BytesMut::new();
            for (index, batch) in batches.iter().enumerate() {
                let other = batch.columns.get(name).ok_or_else(|| BatchError::Column {
                    column: name.clone(),
                    why: format!("missing from batch {index}"),
                })?;
                if other.dtype != column.dtype || other.row_shape != column.row_shape {
                    return Err(BatchError::Column {
                        column: name.clone(),
                        why: format!(
                            "batch {index} holds {:?} {:?}, batch 0 {:?} {:?}",
                            other.dtype, other.row_shape, column.dtype, column.row_shape
                        ),
                    });
                }
                data.extend_from_slice(&other.data);
            }
            columns.insert(
                name.clone(),
                Column {
                    data: data.freeze(),
                    ..column.clone()
                },
            );
        }
        if let Some((index, extra)) = batches.iter().enumerate().find_map(|(i, b)| {
            b.columns
                .keys()
                .find(|k| !first.columns.contains_key(*k))
                .map(|k| (i, k.clone()))
        }) {
            return Err(BatchError::Column {
                column: extra,
                why: format!("in batch {index} but not in batch 0"),
            });
        }
        Ok(Batch {
            rows: batches.iter().map(|batch| batch.rows).sum(),
            columns,
            meta: batches
                .iter()
                .flat_map(|batch| batch.meta.clone())
                .collect(),
            step: batches.iter().fold(first.step.clone(), |mut step, batch| {
                step.fill_from(&batch.step);
                step
            }),
        })
    }

    /// Each row `times` times in a row (as GRPO repeats a prompt for its group).
    pub fn repeat_interleave(&self, times: usize) -> Result<Batch, BatchError> {
        let indexes: Vec<usize> = (0..self.rows)
            .flat_map(|row| std::iter::repeat_n(row, times))
            .collect();
        self.select(&indexes)
    }

    /// Header (bincode) then every column's raw bytes, in column-name order.
    pub fn encode(&self) -> Result<Bytes, BatchError> {
        let header = Header {
            rows: self.rows,
            columns: self
                .columns
                .iter()
                .map(|(name, c)| (name.clone(), c.dtype, c.row_shape.clone()))
                .collect(),
            meta: self.meta.clone(),
            step: self.step.clone(),
        };
        let header =
            crate::codec::encode(&header).map_err(|err| BatchError::Decode(err.to_string()))?;
        let body: usize = self.columns.values().map(|c| c.data.len()).sum();
        let mut out = BytesMut::with_capacity(8 + header.len() + body);
        out.put_u64_le(header.len() as u64);
        out.extend_from_slice(&header);
        for column in self.columns.values() {
            out.extend_from_slice(&column.data);
        }
        Ok(out.freeze())
    }

    /// The inverse of `encode`; columns share `bytes` (no copy).
    pub fn decode(bytes: Bytes) -> Result<Batch, BatchError> {
        let fail = |why: String| BatchError::Decode(why);
        if bytes.len() < 8 {
            return Err(fail("shorter than its header length".to_string()));
        }
        let header_len = u64::from_le_bytes(
            bytes[..8]
                .try_into()
                .map_err(|_| fail("header length".into()))?,
        ) as usize;
        let body_start = 8usize
            .checked_add(header_len)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                fail(format!(
                    "a {header_len}-byte header in {} bytes",
                    bytes.len()
                ))
            })?;
        let header: Header =
            crate::codec::decode(&bytes[8..body_start]).map_err(|err| fail(err.to_string()))?;
        if header.meta.len() != header.rows {
            return Err(fail(format!(
                "{} metadata rows for {} rows",
                header.meta.len(),
                header.rows
            )));
        }
        let mut at = body_start;
        let mut columns = BTreeMap::new();
        for (name, dtype, row_shape) in header.columns {
            let width = row_shape
                .iter()
                .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
                .ok_or_else(|| fail(format!("column `{name}` is too large")))?;
            let len = width
                .checked_mul(header.rows)
                .ok_or_else(|| fail(format!("column `{name}` is too large")))?;
            let end = at
                .checked_add(len)
                .filter(|end| *end <= bytes.len())
                .ok_or_else(|| fail(format!("column `{name}` runs past the end")))?;
            columns.insert(
                name,
                Column {
                    dtype,
                    row_shape,
                    data: bytes.slice(at..end),
                },
            );
            at = end;
        }
        if at != bytes.len() {
            return Err(fail(format!(
                "{} bytes after the last column",
                bytes.len() - at
            )));
        }
        Ok(Batch {
            rows: header.rows,
            columns,
            meta: header.meta,
            step: header.step,
        })
    }
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = self.encode().map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&encoded)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(deserializer)?;
        Batch::decode(Bytes::from(bytes)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let mut batch = Batch::new(5)
            .with_f32("reward", &[], &[0.0, 1.0, 2.0, 3.0, 4.0])
            .unwrap()
            .with_f32(
                "logp",
                &[2],
                &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5],
            )
            .unwrap();
        for (row, meta) in batch.meta_mut().iter_mut().enumerate() {
            meta.insert("prompt".into(), format!("p{row}"));
        }
        batch
    }

    #[test]
    fn split_then_concat_is_the_identity() {
        let batch = sample();
        let parts = batch.split(2).unwrap();
        assert_eq!(
            parts.iter().map(Batch::rows).collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_eq!(
            parts[1].f32_values("logp").unwrap(),
            vec![3.0, 3.5, 4.0, 4.5]
        );
        assert_eq!(Batch::concat(&parts).unwrap(), batch);
        assert_eq!(
            batch
                .split(7)
                .unwrap()
                .iter()
                .filter(|b| b.rows() == 0)
                .count(),
            2
        );
    }

    #[test]
    fn select_and_repeat_interleave() {
        let batch = sample();
        let picked = batch.select(&[4, 0]).unwrap();
        assert_eq!(picked.f32_values("reward").unwrap(), vec![4.0, 0.0]);
        assert_eq!(picked.meta()[0]["prompt"], "p4");
        let repeated = batch.slice(0, 2).unwrap().repeat_interleave(3).unwrap();
        assert_eq!(
            repeated.f32_values("reward").unwrap(),
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
        );
        assert!(batch
            .select(&[5])
            .unwrap_err()
            .to_string()
            .contains("row 5"));
    }

    #[test]
    fn raw_bytes_round_trip_and_garbage_is_refused() {
        let batch = sample();
        let encoded = batch.encode().unwrap();
        assert_eq!(Batch::decode(encoded.clone()).unwrap(), batch);
        let via_serde: Batch =
            crate::codec::decode(&crate::codec::encode(&batch).unwrap()).unwrap();
        assert_eq!(via_serde, batch);
        assert!(Batch::decode(encoded.slice(..encoded.len() - 1)).is_err());
        assert!(Batch::decode(Bytes::from_static(&[255; 16])).is_err());
        assert!(Batch::decode(Bytes::from_static(&[1, 2])).is_err());
    }

    #[test]
    fn mismatched_columns_are_named() {
        let a = sample();
        let b = Batch::new(1)
            .with_f32("reward", &[3], &[1.0, 2.0, 3.0])
            .unwrap();
        let err = Batch::concat(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("reward") || err.contains("logp"), "{err}");
        let short = Batch::new(2).with_f32("x", &[2], &[1.0]).unwrap_err();
        assert!(short.to_string().contains("column `x`"));
    }
}
