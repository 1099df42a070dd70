//! Executing plans on byte buffers: strided copies, dtype conversion, replica checks and averages.

use crate::{convert, CopyOp, Loc, MergeError, Plan, ReplicaPolicy};
use uc_schema::DType;

/// One strided copy: `shape` elements from `src` (element offset/strides) to `dst`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub offset: u64,
    pub strides: &'a [u64],
}

impl<'a> From<&'a Loc> for Strided<'a> {
    fn from(l: &'a Loc) -> Self {
        Strided {
            offset: l.offset,
            strides: &l.strides,
        }
    }
}

/// One past the largest element index a strided view of `shape` touches (0 if empty).
pub fn view_end(shape: &[u64], v: Strided) -> u64 {
    if shape.contains(&0) {
        return 0;
    }
    v.offset
        + shape
            .iter()
            .zip(v.strides)
            .map(|(n, s)| (n - 1) * s)
            .sum::<u64>()
        + 1
}

/// Merges dims so the innermost run is as long as possible: drops extent-1 dims and fuses
/// neighbours that are contiguous in both views. Returns (shape, src strides, dst strides).
fn simplify(shape: &[u64], a: &[u64], b: &[u64]) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let (mut sh, mut sa, mut sb) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let (Some(&n), Some(&x), Some(&y)) = (sh.last(), sa.last(), sb.last()) {
            if x == a[d] * shape[d] && y == b[d] * shape[d] {
                let _ = n;
                *sh.last_mut().expect("non-empty") *= shape[d];
                *sa.last_mut().expect("non-empty") = a[d];
                *sb.last_mut().expect("non-empty") = b[d];
                continue;
            }
        }
        sh.push(shape[d]);
        sa.push(a[d]);
        sb.push(b[d]);
    }
    if sh.is_empty() {
        (vec![1], vec![1], vec![1])
    } else {
        (sh, sa, sb)
    }
}

/// Calls `f(src_elem, dst_elem, run)` for every innermost run of a strided copy; `run` elements
/// are contiguous in both views when the innermost strides are 1.
fn for_each_run(
    shape: &[u64],
    src: Strided,
    dst: Strided,
    mut f: impl FnMut(u64, u64, u64, u64, u64),
) {
    if shape.contains(&0) {
        return;
    }
    let (sh, sa, sb) = simplify(shape, src.strides, dst.strides);
    let nd = sh.len();
    let (run, ia, ib) = (sh[nd - 1], sa[nd - 1], sb[nd - 1]);
    let mut idx = vec![0u64; nd - 1];
    let (mut pa, mut pb) = (src.offset, dst.offset);
    loop {
        f(pa, pb, run, ia, ib);
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            pa += sa[d];
            pb += sb[d];
            if idx[d] < sh[d] {
                break;
            }
            pa -= sa[d] * sh[d];
            pb -= sb[d] * sh[d];
            idx[d] = 0;
        }
    }
}

fn check_fits(
    what: &str,
    shape: &[u64],
    v: Strided,
    buf_len: usize,
    elem: usize,
) -> Result<(), MergeError> {
    let need = view_end(shape, v).saturating_mul(elem as u64);
    if need > buf_len as u64 {
        return Err(MergeError::BufferTooSmall {
            what: what.to_string(),
            need,
            have: buf_len as u64,
        });
    }
    Ok(())
}

/// Copies a strided box between byte buffers of the same element size (1, 2, 4 or 8 bytes, or any).
pub fn copy_strided(
    shape: &[u64],
    src: &[u8],
    sv: Strided,
    dst: &mut [u8],
    dv: Strided,
    elem: usize,
) -> Result<(), MergeError> {
    check_fits("source", shape, sv, src.len(), elem)?;
    check_fits("target", shape, dv, dst.len(), elem)?;
    for_each_run(shape, sv, dv, |a, b, run, ia, ib| {
        let (a, b, run) = (a as usize * elem, b as usize * elem, run as usize);
        if ia == 1 && ib == 1 {
            dst[b..b + run * elem].copy_from_slice(&src[a..a + run * elem]);
        } else {
            for k in 0..run {
                let (x, y) = (a + k * ia as usize * elem, b + k * ib as usize * elem);
                dst[y..y + elem].copy_from_slice(&src[x..x + elem]);
            }
        }
    });
    Ok(())
}

/// Copies a strided box converting `from` → `to` elements (see [`convert`]).
pub fn convert_strided(
    shape: &[u64],
    src: &[u8],
    sv: Strided,
    from: DType,
    dst: &mut [u8],
    dv: Strided,
    to: DType,
) -> Result<(), MergeError> {
    if from == to {
        return copy_strided(shape, src, sv, dst, dv, from.size());
    }
    let (es, ed) = (from.size(), to.size());
    check_fits("source", shape, sv, src.len(), es)?;
    check_fits("target", shape, dv, dst.len(), ed)?;
    let mut err = None;
    for_each_run(shape, sv, dv, |a, b, run, ia, ib| {
        if err.is_some() {
            return;
        }
        let (a, b, run) = (a as usize, b as usize, run as usize);
        if ia == 1 && ib == 1 {
            if let Err(e) = convert::convert(
                &src[a * es..(a + run) * es],
                from,
                &mut dst[b * ed..(b + run) * ed],
                to,
            ) {
                err = Some(e);
            }
        } else {
            for k in 0..run {
                let (x, y) = (a + k * ia as usize, b + k * ib as usize);
                if let Err(e) = convert::convert(
                    &src[x * es..(x + 1) * es],
                    from,
                    &mut dst[y * ed..(y + 1) * ed],
                    to,
                ) {
                    err = Some(e);
                    return;
                }
            }
        }
    });
    err.map_or(Ok(()), Err)
}

/// Reads a strided box into a dense row-major `Vec<f64>` (for averaging).
fn gather_f64(
    shape: &[u64],
    src: &[u8],
    sv: Strided,
    dtype: DType,
) -> Result<Vec<f64>, MergeError> {
    let n: u64 = shape.iter().product();
    let mut dense = vec![0u8; n as usize * 8];
    let dv_strides = crate::rowmajor_strides(shape);
    convert_strided(
        shape,
        src,
        sv,
        dtype,
        &mut dense,
        Strided {
            offset: 0,
            strides: &dv_strides,
        },
        DType::F64,
    )?;
    Ok(dense
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Executes the ops of `plan` that write target `(rank, buffer)` into `dst`.
///
/// `src(rank, buffer)` returns a source buffer (`None` → [`MergeError::MissingSource`]);
/// `from` / `to` are the source and target element types.
pub fn execute_target<'s>(
    plan: &Plan,
    rank: u32,
    buffer: u32,
    dst: &mut [u8],
    to: DType,
    from: DType,
    src: &dyn Fn(u32, u32) -> Option<&'s [u8]>,
) -> Result<(), MergeError> {
    for op in plan.ops_for(rank, buffer) {
        execute_op(plan, op, dst, to, from, src)?;
    }
    Ok(())
}

/// Executes one copy op into `dst`.
pub fn execute_op<'s>(
    plan: &Plan,
    op: &CopyOp,
    dst: &mut [u8],
    to: DType,
    from: DType,
    src: &dyn Fn(u32, u32) -> Option<&'s [u8]>,
) -> Result<(), MergeError> {
    let get = |l: &Loc| {
        src(l.rank, l.buffer).ok_or(MergeError::MissingSource {
            tensor: plan.name.clone(),
            rank: l.rank,
            buffer: l.buffer,
        })
    };
    let shape = &op.global.len;
    let first = &op.srcs[0];
    match plan.policy {
        ReplicaPolicy::First | ReplicaPolicy::Verify => {
            convert_strided(
                shape,
                get(first)?,
                first.into(),
                from,
                dst,
                (&op.dst).into(),
                to,
            )?;
            if plan.policy == ReplicaPolicy::Verify && op.srcs.len() > 1 {
                let n: u64 = shape.iter().product();
                let dense_strides = crate::rowmajor_strides(shape);
                let dense = Strided {
                    offset: 0,
                    strides: &dense_strides,
                };
                let mut a = vec![0u8; n as usize * from.size()];
                copy_strided(shape, get(first)?, first.into(), &mut a, dense, from.size())?;
                let mut b = vec![0u8; a.len()];
                for other in &op.srcs[1..] {
                    copy_strided(shape, get(other)?, other.into(), &mut b, dense, from.size())?;
                    if a != b {
                        return Err(MergeError::ReplicaMismatch {
                            tensor: plan.name.clone(),
                            a: first.rank,
                            b: other.rank,
                            region: Box::new(op.global.clone()),
                        });
                    }
                }
            }
            Ok(())
        }
        ReplicaPolicy::Average => {
            let mut acc = gather_f64(shape, get(first)?, first.into(), from)?;
            for other in &op.srcs[1..] {
                for (x, y) in
                    acc.iter_mut()
                        .zip(gather_f64(shape, get(other)?, other.into(), from)?)
                {
                    *x += y;
                }
            }
            let k = op.srcs.len() as f64;
            let bytes: Vec<u8> = acc.iter().flat_map(|x| (x / k).to_le_bytes()).collect();
            let dense_strides = crate::rowmajor_strides(shape);
            convert_strided(
                shape,
                &bytes,
                Strided {
                    offset: 0,
                    strides: &dense_strides,
                },
                DType::F64,
                dst,
                (&op.dst).into(),
                to,
            )
        }
    }
}
