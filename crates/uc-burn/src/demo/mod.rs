//! The demo: a tensor-parallel transformer LM trained at TP=2, saved sharded, converted to the universal
//! checkpoint, resumed at TP=1 and TP=4; loss curves against the uninterrupted TP=2 run.

pub mod data;
pub mod model;
pub mod plot;
mod train;

use crate::error::{io_err, BurnError, Result};
use crate::load::LoadStats;
use burn::tensor::backend::AutodiffBackend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use model::Config;
pub use train::Trainer;

/// What the demo does.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// Last step of every run.
    pub steps: u64,
    /// The step after which the TP=2 run is saved and the resumed runs start.
    pub save_at: u64,
    /// Tensor-parallel size of the saved run.
    pub save_tp: u32,
    /// Tensor-parallel sizes to resume at.
    pub resume_tp: Vec<u32>,
    pub lr: f64,
    pub seed: u64,
    pub model: Config,
    /// Largest allowed |resumed − uninterrupted| / |uninterrupted| of a loss.
    pub tolerance: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            steps: 200,
            save_at: 100,
            save_tp: 2,
            resume_tp: vec![1, 4],
            lr: 3e-3,
            seed: 1234,
            model: Config::default(),
            tolerance: 1e-5,
        }
    }
}

/// The outcome of a demo run.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// `(step, loss)` of the uninterrupted run.
    pub uninterrupted: Vec<(u64, f64)>,
    /// `tp → (step, loss)` of each resumed run.
    pub resumed: BTreeMap<u32, Vec<(u64, f64)>>,
    /// `tp →` the largest relative loss difference to the uninterrupted run.
    pub max_rel_diff: BTreeMap<u32, f64>,
    /// `tp →` bytes read and needed loading all its ranks.
    pub load: BTreeMap<u32, LoadStats>,
    /// Parameters in the model.
    pub num_params: u64,
    pub sharded_dir: PathBuf,
    pub universal_dir: PathBuf,
    pub csv: PathBuf,
    pub svg: PathBuf,
}

/// Runs the demo on the CPU (ndarray) backend, writing into `out`.
pub fn run(out: &Path, opts: &DemoOptions) -> Result<DemoSummary> {
    run_on::<crate::CpuAutodiff>(out, opts, &Default::default())
}

/// Runs the demo on any autodiff backend (e.g. CUDA) and `device`.
pub fn run_on<B: AutodiffBackend>(
    out: &Path,
    opts: &DemoOptions,
    device: &B::Device,
) -> Result<DemoSummary> {
    if opts.save_at == 0 || opts.save_at >= opts.steps {
        return Err(BurnError::Data {
            tensor: "demo".into(),
            why: format!(
                "save step {} must lie inside 1..{}",
                opts.save_at, opts.steps
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let sharded = out
        .join("checkpoint")
        .join(format!("sharded-tp{}-step{}", opts.save_tp, opts.save_at));
    let universal = out
        .join("checkpoint")
        .join(format!("universal-step{}", opts.save_at));
    let mut base = Trainer::<B>::new(opts, opts.save_tp, device)?;
    let mut uninterrupted = Vec::new();
    for step in 1..=opts.save_at {
        uninterrupted.push((step, base.step(step)?));
    }
    base.save_sharded(&sharded)?;
    crate::save::convert_sharded(&sharded, &universal)?;
    let ckpt = uc_store::native::NativeCheckpoint::open(&universal)?;
    let (mut resumed, mut load) = (BTreeMap::new(), BTreeMap::new());
    let mut runs = Vec::new();
    for &tp in &opts.resume_tp {
        let (t, stats) = Trainer::<B>::resume(opts, tp, &ckpt, device)?;
        base.same_state(&t)?;
        load.insert(tp, stats);
        runs.push((tp, t));
    }
    for step in opts.save_at + 1..=opts.steps {
        uninterrupted.push((step, base.step(step)?));
    }
    for (tp, mut t) in runs {
        let mut losses = Vec::new();
        for step in opts.save_at + 1..=opts.steps {
            losses.push((step, t.step(step)?));
        }
        resumed.insert(tp, losses);
    }
    let mut max_rel_diff = BTreeMap::new();
    for (tp, losses) in &resumed {
        let worst = losses
            .iter()
            .zip(&uninterrupted[opts.save_at as usize..])
            .map(|((_, a), (_, b))| ((a - b) / b).abs())
            .fold(0.0, f64::max);
        max_rel_diff.insert(*tp, worst);
    }
    let names: Vec<String> = resumed.keys().map(|tp| format!("resumed_tp{tp}")).collect();
    let colors = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let base_name = format!("uninterrupted_tp{}", opts.save_tp);
    let mut curves = vec![plot::Curve {
        run: &base_name,
        color: "#1f77b4",
        points: &uninterrupted,
    }];
    for (i, ((_, pts), name)) in resumed.iter().zip(&names).enumerate() {
        curves.push(plot::Curve {
            run: name,
            color: colors[i % colors.len()],
            points: pts,
        });
    }
    let csv = out.join("loss.csv");
    let svg = out.join("loss.svg");
    std::fs::write(&csv, plot::csv(&curves)).map_err(io_err(&csv))?;
    let title = format!(
        "uc-burn demo: saved at TP={} step {}, resumed at TP={:?}",
        opts.save_tp, opts.save_at, opts.resume_tp
    );
    std::fs::write(&svg, plot::svg(&title, &curves, Some(opts.save_at))).map_err(io_err(&svg))?;
    Ok(DemoSummary {
        uninterrupted,
        resumed,
        max_rel_diff,
        load,
        num_params: opts
            .model
            .params()
            .iter()
            .map(|(_, s)| s.iter().product::<u64>())
            .sum(),
        sharded_dir: sharded,
        universal_dir: universal,
        csv,
        svg,
    })
}
