//! Folds N-d boxes onto a 2-D grid: rows = dims `..k`, columns = dims `k..` (row-major flattened).
//!
//! A box becomes the product of its row runs and column runs. `k` is chosen per tensor to draw its
//! boxes with the fewest rectangles (ties: the largest `k`, so a 3-D `[E, R, C]` shows `E·R` rows).
//! 1-D tensors are one row (a bar); 0-D tensors one cell.

use uc_merge::{region_to_flat_ranges, Region};

/// Most rectangles drawn for one box; past it the box is drawn as its bounding rectangle.
pub const MAX_CELLS: u64 = 256;

/// A rectangle of the folded grid, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub row: u64,
    pub rows: u64,
    pub col: u64,
    pub cols: u64,
}

/// How a tensor of `shape` is folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub shape: Vec<u64>,
    /// Dims `..k` make the rows.
    pub k: usize,
    pub rows: u64,
    pub cols: u64,
}

/// Number of contiguous flat runs a box covers in `shape` (1 for an empty shape).
fn run_count(shape: &[u64], off: &[u64], len: &[u64]) -> u64 {
    let mut k = shape.len();
    while k > 0 && off[k - 1] == 0 && len[k - 1] == shape[k - 1] {
        k -= 1;
    }
    len[..k.saturating_sub(1)]
        .iter()
        .fold(1u64, |a, &l| a.saturating_mul(l))
}

impl Fold {
    /// Picks the fold of `shape` that draws `boxes` with the fewest rectangles.
    pub fn new(shape: &[u64], boxes: &[&Region]) -> Fold {
        let nd = shape.len();
        let k = if nd < 2 {
            0
        } else {
            let cost = |k: usize| {
                boxes
                    .iter()
                    .filter(|b| b.ndim() == nd)
                    .map(|b| {
                        let r = run_count(&shape[..k], &b.off[..k], &b.len[..k]);
                        let c = run_count(&shape[k..], &b.off[k..], &b.len[k..]);
                        r.saturating_mul(c)
                    })
                    .fold(0u64, u64::saturating_add)
            };
            (1..nd).rev().min_by_key(|&k| cost(k)).unwrap_or(nd - 1)
        };
        let prod = |s: &[u64]| s.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        Fold {
            shape: shape.to_vec(),
            k,
            rows: prod(&shape[..k]).max(1),
            cols: prod(&shape[k..]).max(1),
        }
    }

    /// The rectangles of a box, and whether it was simplified to its bounding rectangle.
    pub fn cells(&self, b: &Region) -> (Vec<Cell>, bool) {
        let k = self.k;
        if b.ndim() != self.shape.len() || b.is_empty() {
            return (Vec::new(), false);
        }
        if self.shape.is_empty() {
            return (
                vec![Cell {
                    row: 0,
                    rows: 1,
                    col: 0,
                    cols: 1,
                }],
                false,
            );
        }
        let part = |lo: usize, hi: usize| Region::new(&b.off[lo..hi], &b.len[lo..hi]);
        let (rs, cs) = (part(0, k), part(k, self.shape.len()));
        let (rshape, cshape) = (&self.shape[..k], &self.shape[k..]);
        let n =
            run_count(rshape, &rs.off, &rs.len).saturating_mul(run_count(cshape, &cs.off, &cs.len));
        let runs = |s: &[u64], r: &Region| region_to_flat_ranges(s, r);
        if n > MAX_CELLS {
            let span = |v: Vec<(u64, u64)>| {
                let lo = v.first().map_or(0, |r| r.0);
                let hi = v.last().map_or(0, |r| r.0 + r.1);
                (lo, hi - lo)
            };
            // Only the first and last runs matter; compute them from the corners.
            let (row, rows) = span(bounds(rshape, &rs));
            let (col, cols) = span(bounds(cshape, &cs));
            return (
                vec![Cell {
                    row,
                    rows,
                    col,
                    cols,
                }],
                true,
            );
        }
        let (rr, cc) = (runs(rshape, &rs), runs(cshape, &cs));
        let cells = rr
            .iter()
            .flat_map(|&(row, rows)| {
                cc.iter().map(move |&(col, cols)| Cell {
                    row,
                    rows,
                    col,
                    cols,
                })
            })
            .collect();
        (cells, false)
    }
}

/// First and last flat runs of a box (its flat extent) without enumerating the runs between.
fn bounds(shape: &[u64], r: &Region) -> Vec<(u64, u64)> {
    if shape.is_empty() {
        return vec![(0, 1)];
    }
    let first = uc_merge::flat_index(shape, &r.off);
    let last: Vec<u64> = r.off.iter().zip(&r.len).map(|(o, l)| o + l - 1).collect();
    let end = uc_merge::flat_index(shape, &last) + 1;
    vec![(first, 0), (end, 0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(off: &[u64], len: &[u64]) -> Region {
        Region::new(off, len)
    }

    #[test]
    fn two_d_is_rows_by_cols() {
        let f = Fold::new(&[64, 32], &[]);
        assert_eq!((f.k, f.rows, f.cols), (1, 64, 32));
        let (c, approx) = f.cells(&reg(&[16, 0], &[8, 32]));
        assert!(!approx);
        assert_eq!(
            c,
            vec![Cell {
                row: 16,
                rows: 8,
                col: 0,
                cols: 32
            }]
        );
    }

    #[test]
    fn one_d_is_a_bar() {
        let f = Fold::new(&[10], &[]);
        assert_eq!((f.k, f.rows, f.cols), (0, 1, 10));
        let (c, _) = f.cells(&reg(&[4], &[3]));
        assert_eq!(
            c,
            vec![Cell {
                row: 0,
                rows: 1,
                col: 4,
                cols: 3
            }]
        );
    }

    #[test]
    fn three_d_picks_the_fold_with_fewest_cells() {
        // Shards of dim 1 of [4, 6, 8]: folding rows = dim 0 keeps each one rectangle.
        let b = [reg(&[0, 0, 0], &[4, 3, 8]), reg(&[0, 3, 0], &[4, 3, 8])];
        let f = Fold::new(&[4, 6, 8], &[&b[0], &b[1]]);
        assert_eq!((f.k, f.rows, f.cols), (1, 4, 48));
        assert_eq!(
            f.cells(&b[1]).0,
            vec![Cell {
                row: 0,
                rows: 4,
                col: 24,
                cols: 24
            }]
        );
        // Expert blocks on dim 0: a tie, so rows = E·R.
        let e = [reg(&[0, 0, 0], &[2, 6, 8]), reg(&[2, 0, 0], &[2, 6, 8])];
        let f = Fold::new(&[4, 6, 8], &[&e[0], &e[1]]);
        assert_eq!((f.k, f.rows, f.cols), (2, 24, 8));
        assert_eq!(
            f.cells(&e[1]).0,
            vec![Cell {
                row: 12,
                rows: 12,
                col: 0,
                cols: 8
            }]
        );
    }

    #[test]
    fn stripes_past_the_limit_become_a_bounding_cell() {
        let f = Fold {
            shape: vec![1000, 10, 4],
            k: 2,
            rows: 10000,
            cols: 4,
        };
        let (c, approx) = f.cells(&reg(&[0, 2, 0], &[1000, 1, 4]));
        assert!(approx);
        assert_eq!(
            c,
            vec![Cell {
                row: 2,
                rows: 9991,
                col: 0,
                cols: 4
            }]
        );
        let (c, approx) = f.cells(&reg(&[0, 2, 0], &[3, 1, 4]));
        assert!(!approx);
        assert_eq!(c.len(), 3);
    }
}
