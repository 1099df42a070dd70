//! Burn's own Adam (`AdamConfig::init()`) ⇄ named `exp_avg` / `exp_avg_sq` / `step` flat tensors, so
//! trainers using Burn's optimizer save and resume its state through unicheck too.

use crate::error::{BurnError, Result};
use crate::shards::Shards;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{Adam, AdamState, AdaptiveMomentumState, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use uc_schema::Role;

/// Parameter path names → ids and shapes of an (autodiff) module.
struct Ids {
    path: Vec<String>,
    out: Vec<(String, ParamId, Vec<usize>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Ids {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out
            .push((self.path.join("."), param.id, param.val().dims().to_vec()));
    }
}

fn ids<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> Vec<(String, ParamId, Vec<usize>)> {
    let mut v = Ids {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Flattens one Burn Adam state of rank `D` into `(exp_avg, exp_avg_sq, time)`.
fn flat_state<B: AutodiffBackend, const D: usize>(
    r: AdaptorRecord<Adam, B>,
) -> (
    Tensor<B::InnerBackend, 1>,
    Tensor<B::InnerBackend, 1>,
    usize,
) {
    let s: AdamState<B::InnerBackend, D> = r.into_state::<D>();
    let m = s.momentum;
    (
        m.moment_1.flatten(0, D - 1),
        m.moment_2.flatten(0, D - 1),
        m.time,
    )
}

/// Burn Adam's state for every parameter of `module` that has one, keyed by parameter name with
/// roles `exp_avg`, `exp_avg_sq` and `step` (buffer 0), on the device.
pub fn export_adam<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    optim: &OptimizerAdaptor<Adam, M, B>,
) -> Result<Shards<B::InnerBackend>> {
    let record = optim.to_record();
    let mut out = Shards::new();
    for (name, id, shape) in ids::<B, M>(module) {
        let Some(r) = record.get(&id).cloned() else {
            continue;
        };
        let (m1, m2, t) = match shape.len() {
            1 => flat_state::<B, 1>(r),
            2 => flat_state::<B, 2>(r),
            3 => flat_state::<B, 3>(r),
            4 => flat_state::<B, 4>(r),
            n => {
                return Err(BurnError::Data {
                    tensor: name,
                    why: format!("{n}-d parameters are not supported"),
                });
            }
        };
        let dev = m1.device();
        out.insert((name.clone(), Role::ExpAvg, 0), m1);
        out.insert((name.clone(), Role::ExpAvgSq, 0), m2);
        out.insert(
            (name, Role::Step, 0),
            crate::io::from_f32(vec![t as f32], &dev),
        );
    }
    Ok(out)
}

fn record_of<B: AutodiffBackend, const D: usize>(
    shape: &[usize],
    m1: Tensor<B::InnerBackend, 1>,
    m2: Tensor<B::InnerBackend, 1>,
    time: usize,
) -> AdaptorRecord<Adam, B> {
    let dims: [usize; D] = std::array::from_fn(|i| shape[i]);
    let state = AdamState {
        momentum: AdaptiveMomentumState {
            time,
            moment_1: m1.reshape(dims),
            moment_2: m2.reshape(dims),
            max_moment_2: None,
        },
    };
    AdaptorRecord::from_state::<D>(state)
}

/// Loads named Adam state (as [`export_adam`] makes, e.g. from [`crate::load_rank`]) into Burn's
/// optimizer for `module`; parameters without state start fresh.
pub fn import_adam<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    optim: OptimizerAdaptor<Adam, M, B>,
    state: &Shards<B::InnerBackend>,
) -> Result<OptimizerAdaptor<Adam, M, B>> {
    let mut record = optim.to_record();
    record.clear();
    let get = |n: &str, r: Role| state.get(&(n.to_string(), r, 0)).cloned();
    for (name, id, shape) in ids::<B, M>(module) {
        let (Some(m1), Some(m2), Some(t)) = (
            get(&name, Role::ExpAvg),
            get(&name, Role::ExpAvgSq),
            get(&name, Role::Step),
        ) else {
            continue;
        };
        let n: usize = shape.iter().product();
        if m1.dims()[0] != n || m2.dims()[0] != n {
            return Err(BurnError::Data {
                tensor: name,
                why: format!("Adam state is not {n} elements"),
            });
        }
        let time = crate::io::to_f32(&name, t)?.first().copied().unwrap_or(0.0);
        if !(time >= 0.0 && time.fract() == 0.0) {
            return Err(BurnError::Data {
                tensor: name,
                why: format!("step {time} is not a count"),
            });
        }
        let time = time as usize;
        let rec = match shape.len() {
            1 => record_of::<B, 1>(&shape, m1, m2, time),
            2 => record_of::<B, 2>(&shape, m1, m2, time),
            3 => record_of::<B, 3>(&shape, m1, m2, time),
            4 => record_of::<B, 4>(&shape, m1, m2, time),
            d => {
                return Err(BurnError::Data {
                    tensor: name,
                    why: format!("{d}-d parameters are not supported"),
                })
            }
        };
        record.insert(id, rec);
    }
    Ok(optim.load_record(record))
}

/// Every parameter of `module` as `(name, global shape)`, for [`crate::LayoutRules::metas`].
pub fn param_shapes<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
) -> BTreeMap<String, Vec<u64>> {
    ids::<B, M>(module)
        .into_iter()
        .map(|(n, _, s)| (n, s.into_iter().map(|d| d as u64).collect()))
        .collect()
}
