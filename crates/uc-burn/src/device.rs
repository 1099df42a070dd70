//! Plans executed on device tensors: `slice` / `slice_assign` / `cat` on the backend, never via the host.
//!
//! Every local buffer is a flat `Tensor<B, 1>`. A copy op's box (offset + strides + extent) is cut
//! out of a flat buffer by viewing a window of it as an N-d tensor whose dims follow the strides.

use crate::error::{BurnError, Result};
use burn::tensor::{backend::Backend, Tensor};
use std::ops::Range;
use uc_merge::{Loc, Plan, ReplicaPolicy};

/// Most dims a box view may have after dropping unit dims.
pub const MAX_VIEW_DIMS: usize = 6;

/// A strided box of a flat buffer as an N-d window: start, window length, view dims, box extent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    start: usize,
    window: usize,
    dims: Vec<usize>,
    len: Vec<usize>,
}

impl View {
    /// The view of the box of extent `len` at `loc`; `None` when it is one contiguous run.
    fn of(tensor: &str, len: &[u64], loc: &Loc) -> Result<Option<View>> {
        let mut dims: Vec<(u64, u64)> = len
            .iter()
            .zip(&loc.strides)
            .filter(|(&n, _)| n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let numel: u64 = dims.iter().map(|d| d.0).product();
        let span: u64 = dims.iter().map(|(n, s)| (n - 1) * s).sum::<u64>() + 1;
        if numel == 0 || span == numel {
            return Ok(None);
        }
        if dims.last().is_some_and(|d| d.1 != 1) {
            dims.push((1, 1));
        }
        let mut view = Vec::with_capacity(dims.len());
        for (i, &(n, s)) in dims.iter().enumerate() {
            match i {
                0 => view.push(n as usize),
                _ => {
                    let prev = dims[i - 1].1;
                    if s == 0 || !prev.is_multiple_of(s) {
                        return Err(BurnError::Data {
                            tensor: tensor.to_string(),
                            why: format!("strides {:?} are not row-major", loc.strides),
                        });
                    }
                    view.push((prev / s) as usize);
                }
            }
        }
        if view.len() > MAX_VIEW_DIMS {
            return Err(BurnError::Data {
                tensor: tensor.to_string(),
                why: format!("a box of {} dims is more than {MAX_VIEW_DIMS}", view.len()),
            });
        }
        let window = (dims[0].0 * dims[0].1) as usize;
        Ok(Some(View {
            start: loc.offset as usize,
            window,
            dims: view,
            len: dims.iter().map(|d| d.0 as usize).collect(),
        }))
    }

    fn ranges(&self) -> Vec<Range<usize>> {
        self.len.iter().map(|&n| 0..n).collect()
    }
}

/// Reshapes a flat tensor to `dims` (1 to [`MAX_VIEW_DIMS`] dims), applies `f`, flattens back.
fn in_view<B: Backend>(
    flat: Tensor<B, 1>,
    dims: &[usize],
    f: impl FnOnce(&[usize], ViewTensor<B>) -> ViewTensor<B>,
) -> Tensor<B, 1> {
    let v = match dims.len() {
        1 => ViewTensor::D1(flat),
        2 => ViewTensor::D2(flat.reshape([dims[0], dims[1]])),
        3 => ViewTensor::D3(flat.reshape([dims[0], dims[1], dims[2]])),
        4 => ViewTensor::D4(flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
        5 => ViewTensor::D5(flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4]])),
        _ => ViewTensor::D6(flat.reshape([dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]])),
    };
    f(dims, v).flat()
}

/// A tensor of 1 to 6 dims.
enum ViewTensor<B: Backend> {
    D1(Tensor<B, 1>),
    D2(Tensor<B, 2>),
    D3(Tensor<B, 3>),
    D4(Tensor<B, 4>),
    D5(Tensor<B, 5>),
    D6(Tensor<B, 6>),
}

macro_rules! each_view {
    ($v:expr, $t:ident => $e:expr) => {
        match $v {
            ViewTensor::D1($t) => ViewTensor::D1($e),
            ViewTensor::D2($t) => ViewTensor::D2($e),
            ViewTensor::D3($t) => ViewTensor::D3($e),
            ViewTensor::D4($t) => ViewTensor::D4($e),
            ViewTensor::D5($t) => ViewTensor::D5($e),
            ViewTensor::D6($t) => ViewTensor::D6($e),
        }
    };
}

impl<B: Backend> ViewTensor<B> {
    fn flat(self) -> Tensor<B, 1> {
        match self {
            ViewTensor::D1(t) => t,
            ViewTensor::D2(t) => t.flatten(0, 1),
            ViewTensor::D3(t) => t.flatten(0, 2),
            ViewTensor::D4(t) => t.flatten(0, 3),
            ViewTensor::D5(t) => t.flatten(0, 4),
            ViewTensor::D6(t) => t.flatten(0, 5),
        }
    }

    fn slice(self, r: &[Range<usize>]) -> Self {
        each_view!(self, t => t.slice(r))
    }

    /// Assigns `values` (flat, row-major over the box) into box `r`.
    fn assign(self, r: &[Range<usize>], values: Tensor<B, 1>) -> Self {
        let len: Vec<usize> = r.iter().map(|x| x.len()).collect();
        match self {
            ViewTensor::D1(t) => ViewTensor::D1(t.slice_assign(r, values)),
            ViewTensor::D2(t) => {
                ViewTensor::D2(t.slice_assign(r, values.reshape([len[0], len[1]])))
            }
            ViewTensor::D3(t) => {
                ViewTensor::D3(t.slice_assign(r, values.reshape([len[0], len[1], len[2]])))
            }
            ViewTensor::D4(t) => {
                ViewTensor::D4(t.slice_assign(r, values.reshape([len[0], len[1], len[2], len[3]])))
            }
            ViewTensor::D5(t) => ViewTensor::D5(
                t.slice_assign(r, values.reshape([len[0], len[1], len[2], len[3], len[4]])),
            ),
            ViewTensor::D6(t) => ViewTensor::D6(t.slice_assign(
                r,
                values.reshape([len[0], len[1], len[2], len[3], len[4], len[5]]),
            )),
        }
    }
}

/// `t[start .. start + window]`, zero-padded at the end where the buffer is shorter.
fn window<B: Backend>(t: &Tensor<B, 1>, start: usize, window: usize) -> Tensor<B, 1> {
    let n = t.dims()[0];
    let end = (start + window).min(n);
    let part = t.clone().slice(start..end);
    if end - start == window {
        return part;
    }
    let pad = Tensor::zeros([window - (end - start)], &t.device());
    Tensor::cat(vec![part, pad], 0)
}

fn check_bounds<B: Backend>(tensor: &str, t: &Tensor<B, 1>, loc: &Loc, len: &[u64]) -> Result<()> {
    let span: u64 = len
        .iter()
        .zip(&loc.strides)
        .map(|(&n, &s)| n.saturating_sub(1) * s)
        .sum::<u64>()
        + 1;
    let n = t.dims()[0] as u64;
    if len.contains(&0) || loc.offset + span <= n {
        return Ok(());
    }
    Err(BurnError::Data {
        tensor: tensor.to_string(),
        why: format!(
            "box at {} spanning {span} overruns a buffer of {n}",
            loc.offset
        ),
    })
}

/// The box of extent `len` at `loc` of a flat buffer, as a flat row-major tensor.
pub fn extract<B: Backend>(
    tensor: &str,
    src: &Tensor<B, 1>,
    loc: &Loc,
    len: &[u64],
) -> Result<Tensor<B, 1>> {
    check_bounds(tensor, src, loc, len)?;
    let numel = len.iter().product::<u64>() as usize;
    match View::of(tensor, len, loc)? {
        None => Ok(src
            .clone()
            .slice(loc.offset as usize..loc.offset as usize + numel)),
        Some(v) => {
            let w = window(src, v.start, v.window);
            let ranges = v.ranges();
            Ok(in_view(w, &v.dims, |_, t| t.slice(&ranges)))
        }
    }
}

/// Writes `values` (flat, row-major over the box) into the box of extent `len` at `loc` of `dst`.
pub fn assign<B: Backend>(
    tensor: &str,
    dst: Tensor<B, 1>,
    loc: &Loc,
    len: &[u64],
    values: Tensor<B, 1>,
) -> Result<Tensor<B, 1>> {
    check_bounds(tensor, &dst, loc, len)?;
    let numel = len.iter().product::<u64>() as usize;
    if numel == 0 {
        return Ok(dst);
    }
    match View::of(tensor, len, loc)? {
        None => {
            let s = loc.offset as usize;
            Ok(dst.slice_assign(s..s + numel, values))
        }
        Some(v) => {
            let n = dst.dims()[0];
            let w = window(&dst, v.start, v.window);
            let ranges = v.ranges();
            let w = in_view(w, &v.dims, |_, t| t.assign(&ranges, values));
            let end = (v.start + v.window).min(n);
            let w = w.slice(0..end - v.start);
            Ok(dst.slice_assign(v.start..end, w))
        }
    }
}

/// Builds target buffer `(rank, buffer)` of `len` elements from the plan's ops, reading source
/// buffers through `get` (device tensors); replicas are read per the plan's policy.
pub fn execute_target<B: Backend>(
    plan: &Plan,
    rank: u32,
    buffer: u32,
    len: usize,
    device: &B::Device,
    get: &dyn Fn(u32, u32) -> Option<Tensor<B, 1>>,
) -> Result<Tensor<B, 1>> {
    let mut dst = Tensor::<B, 1>::zeros([len], device);
    for op in plan.ops_for(rank, buffer) {
        let srcs = match plan.policy {
            ReplicaPolicy::Average => &op.srcs[..],
            _ => &op.srcs[..1],
        };
        let mut acc: Option<Tensor<B, 1>> = None;
        for s in srcs {
            let t = get(s.rank, s.buffer).ok_or_else(|| BurnError::Missing {
                tensor: plan.name.clone(),
                role: format!("rank {} buffer {}", s.rank, s.buffer),
                why: "source buffer not given".into(),
            })?;
            let x = extract(&plan.name, &t, s, &op.global.len)?;
            if plan.policy == ReplicaPolicy::Verify && acc.is_some() {
                continue;
            }
            acc = Some(match acc {
                Some(a) => a + x,
                None => x,
            });
        }
        let mut x = acc.ok_or_else(|| BurnError::Data {
            tensor: plan.name.clone(),
            why: "copy op without a source".into(),
        })?;
        if plan.policy == ReplicaPolicy::Average && srcs.len() > 1 {
            x = x.div_scalar(srcs.len() as f64);
        }
        dst = assign(&plan.name, dst, &op.dst, &op.global.len, x)?;
    }
    Ok(dst)
}
