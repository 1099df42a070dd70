//! A module trained with Burn's own Adam: state exported, saved sharded at TP=2, converted, loaded at
//! TP=1 into a fresh module and optimizer; training goes on bit for bit.

mod common;

use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use common::{save_and_convert, scatter_all};
use std::collections::BTreeMap;
use uc_burn::{burn_adam, io, module, spec, CpuAutodiff, LayoutRules, ParamLayout};
use uc_schema::Role;

type AD = CpuAutodiff;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
}

fn net(dev: &burn::backend::ndarray::NdArrayDevice) -> Net<AD> {
    Net {
        a: LinearConfig::new(6, 8).init(dev),
        b: LinearConfig::new(8, 4).init(dev),
    }
}

fn train(mut n: Net<AD>, optim: &mut impl Optimizer<Net<AD>, AD>, steps: usize) -> Net<AD> {
    let dev = Default::default();
    for s in 0..steps {
        let x: Vec<f32> = (0..30)
            .map(|i| ((i * 7 + s * 3) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let x = Tensor::<AD, 2>::from_data(TensorData::new(x, [5, 6]), &dev);
        let loss = n.b.forward(n.a.forward(x).tanh()).powf_scalar(2.0).mean();
        let g = GradientsParams::from_grads(loss.backward(), &n);
        n = optim.step(1e-2, n, g);
    }
    n
}

fn bits(n: &Net<AD>) -> Vec<(String, Vec<u32>)> {
    module::named_params(&n.valid())
        .into_iter()
        .map(|p| {
            (
                p.name.clone(),
                io::to_f32(&p.name, p.value)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn burn_adam_state_resumes_through_a_sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Default::default();
    let mut optim = AdamConfig::new().init::<AD, Net<AD>>();
    let trained = train(net(&dev), &mut optim, 3);
    // Everything to save, whole, on the device.
    let state = burn_adam::export_adam(&trained, &optim).unwrap();
    assert_eq!(state.len(), 4 * 3, "exp_avg, exp_avg_sq, step of 4 params");
    let mut full: BTreeMap<(String, Role), Tensor<_, 1>> = state
        .into_iter()
        .map(|((n, r, _), t)| ((n, r), t))
        .collect();
    for p in module::named_params(&trained.valid()) {
        full.insert((p.name, Role::Param), p.value);
    }
    let shapes: Vec<(String, Vec<u64>)> = burn_adam::param_shapes(&trained).into_iter().collect();
    let rules = LayoutRules::new()
        .rule(r"^a\.", ParamLayout::Column)
        .unwrap()
        .rule(r"^b\.weight$", ParamLayout::Row)
        .unwrap();
    let metas = rules.metas(&shapes, 2, true).unwrap();
    let ranks = scatter_all(&metas, &full);
    let ck = save_and_convert(dir.path(), &metas, &ranks, &BTreeMap::new());
    let (loaded, _) =
        uc_burn::load_rank(&ck, &spec::relayout(&rules, &metas, 1).unwrap(), 0, &dev).unwrap();
    // A fresh module (other random init) and a fresh optimizer take the loaded state.
    let values: BTreeMap<String, Tensor<AD, 1>> = loaded
        .iter()
        .filter(|(k, _)| k.1 == Role::Param)
        .map(|(k, t)| (k.0.clone(), Tensor::from_inner(t.clone())))
        .collect();
    let fresh = module::assign_params(net(&dev), &values).unwrap();
    assert_eq!(bits(&fresh), bits(&trained));
    let mut optim2 =
        burn_adam::import_adam(&fresh, AdamConfig::new().init::<AD, Net<AD>>(), &loaded).unwrap();
    let before = bits(&trained);
    let a = train(trained, &mut optim, 2);
    assert_ne!(bits(&a), before, "training moves the parameters");
    let b = train(fresh, &mut optim2, 2);
    assert_eq!(bits(&a), bits(&b));
}
