//! Boxes in a parameter's index space: the pieces that layouts hold, their intersections, the
//! decomposition of a flat (row-major) range into boxes, and the contiguous runs a copy between
//! two holdings walks.

/// A half-open box `[start, end)` in the index space of one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexBox {
    pub start: Vec<u64>,
    pub end: Vec<u64>,
}

impl IndexBox {
    /// The whole of a tensor of `shape`.
    pub fn whole(shape: &[u64]) -> Self {
        IndexBox {
            start: vec![0; shape.len()],
            end: shape.to_vec(),
        }
    }

    pub fn extent(&self, dim: usize) -> u64 {
        self.end[dim] - self.start[dim]
    }

    pub fn elements(&self) -> u64 {
        (0..self.start.len()).map(|dim| self.extent(dim)).product()
    }

    pub fn is_empty(&self) -> bool {
        (0..self.start.len()).any(|dim| self.end[dim] <= self.start[dim])
    }

    /// The common part of two boxes, if any.
    pub fn intersect(&self, other: &IndexBox) -> Option<IndexBox> {
        let start: Vec<u64> = self
            .start
            .iter()
            .zip(&other.start)
            .map(|(a, b)| *a.max(b))
            .collect();
        let end: Vec<u64> = self
            .end
            .iter()
            .zip(&other.end)
            .map(|(a, b)| *a.min(b))
            .collect();
        let found = IndexBox { start, end };
        (!found.is_empty()).then_some(found)
    }

    /// Row-major offset of `index` (inside this box) among the box's elements.
    pub fn offset_of(&self, index: &[u64]) -> u64 {
        index.iter().enumerate().fold(0, |offset, (dim, at)| {
            offset * self.extent(dim) + (at - self.start[dim])
        })
    }
}

/// The boxes that make up the row-major element range `[start, end)` of a tensor of `shape`,
/// in row-major order (at most 2 x rank + 1 of them).
pub fn flat_range_boxes(shape: &[u64], start: u64, end: u64) -> Vec<IndexBox> {
    let mut out = Vec::new();
    decompose(shape, start, end, &mut Vec::new(), &mut out);
    out
}

fn decompose(shape: &[u64], start: u64, end: u64, prefix: &mut Vec<u64>, out: &mut Vec<IndexBox>) {
    if start >= end {
        return;
    }
    let Some((&rows, rest)) = shape.split_first() else {
        return;
    };
    let inner: u64 = rest.iter().product();
    let push_rows = |first: u64, last: u64, prefix: &Vec<u64>, out: &mut Vec<IndexBox>| {
        if first >= last {
            return;
        }
        let mut begin = prefix.to_vec();
        let mut finish = prefix.iter().map(|p| p + 1).collect::<Vec<_>>();
        begin.push(first);
        finish.push(last);
        begin.extend(std::iter::repeat_n(0, rest.len()));
        finish.extend(rest.iter().copied());
        out.push(IndexBox {
            start: begin,
            end: finish,
        });
    };
    if inner == 0 || rows == 0 {
        return;
    }
    let first_row = start / inner;
    let last_row = (end - 1) / inner;
    let recurse = |row: u64, from: u64, to: u64, prefix: &mut Vec<u64>, out: &mut Vec<IndexBox>| {
        prefix.push(row);
        decompose(rest, from, to, prefix, out);
        prefix.pop();
    };
    if first_row == last_row {
        if start.is_multiple_of(inner) && end - start == inner {
            push_rows(first_row, first_row + 1, prefix, out);
        } else {
            recurse(
                first_row,
                start - first_row * inner,
                end - first_row * inner,
                prefix,
                out,
            );
        }
        return;
    }
    let mut full_from = first_row;
    if !start.is_multiple_of(inner) {
        recurse(first_row, start - first_row * inner, inner, prefix, out);
        full_from = first_row + 1;
    }
    let tail_partial = !end.is_multiple_of(inner);
    let full_to = if tail_partial { last_row } else { last_row + 1 };
    push_rows(full_from, full_to, prefix, out);
    if tail_partial {
        recurse(last_row, 0, end - last_row * inner, prefix, out);
    }
}

/// One contiguous run of a copy: element offsets in the source and destination holdings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
}

/// The contiguous runs that copy `region` from a holding box `from` to a holding box `to`
/// (both containing `region`). Trailing dimensions that all three span fully are merged, so a
/// copy between equal splits is one run.
pub fn runs(region: &IndexBox, from: &IndexBox, to: &IndexBox) -> Vec<Run> {
    let rank = region.start.len();
    if rank == 0 {
        return vec![Run {
            src: 0,
            dst: 0,
            len: 1,
        }];
    }
    // Find the first dimension from which the run is contiguous in both holdings.
    let mut split = rank - 1;
    while split > 0 {
        let d = split;
        let full = region.start[d] == from.start[d]
            && region.end[d] == from.end[d]
            && region.start[d] == to.start[d]
            && region.end[d] == to.end[d];
        if !full {
            break;
        }
        split -= 1;
    }
    let run_len: u64 = (split..rank).map(|d| region.extent(d)).product();
    let mut out = Vec::new();
    let mut index = region.start.clone();
    loop {
        out.push(Run {
            src: from.offset_of(&index),
            dst: to.offset_of(&index),
            len: run_len,
        });
        // Advance the row-major counter over dimensions before `split`.
        let mut dim = split;
        loop {
            if dim == 0 {
                return out;
            }
            dim -= 1;
            index[dim] += 1;
            if index[dim] < region.end[dim] {
                break;
            }
            index[dim] = region.start[dim];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_ranges_become_row_major_boxes() {
        let shape = [3, 4];
        let boxes = flat_range_boxes(&shape, 2, 11);
        let total: u64 = boxes.iter().map(IndexBox::elements).sum();
        assert_eq!(total, 9);
        assert_eq!(
            boxes[0],
            IndexBox {
                start: vec![0, 2],
                end: vec![1, 4]
            }
        );
        assert_eq!(
            boxes[1],
            IndexBox {
                start: vec![1, 0],
                end: vec![2, 4]
            }
        );
        assert_eq!(
            boxes[2],
            IndexBox {
                start: vec![2, 0],
                end: vec![3, 3]
            }
        );
        assert_eq!(
            flat_range_boxes(&shape, 0, 12),
            vec![IndexBox::whole(&shape)]
        );
        assert_eq!(
            flat_range_boxes(&[5], 1, 3),
            vec![IndexBox {
                start: vec![1],
                end: vec![3]
            }]
        );
    }

    #[test]
    fn runs_merge_full_trailing_dimensions() {
        let whole = IndexBox::whole(&[4, 6]);
        let rows = IndexBox {
            start: vec![2, 0],
            end: vec![4, 6],
        };
        let one = runs(&rows, &whole, &rows);
        assert_eq!(
            one,
            vec![Run {
                src: 12,
                dst: 0,
                len: 12
            }]
        );
        let columns = IndexBox {
            start: vec![0, 3],
            end: vec![4, 6],
        };
        let many = runs(&columns, &whole, &columns);
        assert_eq!(many.len(), 4);
        assert_eq!(
            many[1],
            Run {
                src: 9,
                dst: 3,
                len: 3
            }
        );
    }
}
