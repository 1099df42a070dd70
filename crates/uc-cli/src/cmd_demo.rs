//! `uc demo`: a tensor-parallel Burn training run saved sharded, converted, and resumed elsewhere.

use crate::CliError;
use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Output folder: sharded and universal checkpoints, `loss.csv` and `loss.svg`.
    #[arg(long)]
    out: PathBuf,
    /// Last training step of every run.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Step after which the TP=2 run is saved and the resumed runs (TP=1, TP=4) start.
    #[arg(long = "save-at", default_value_t = 100)]
    save_at: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), CliError> {
    let opts = uc_burn::demo::DemoOptions {
        steps: a.steps,
        save_at: a.save_at,
        ..Default::default()
    };
    let s = uc_burn::demo::run(&a.out, &opts).map_err(|e| CliError::Failed(e.to_string()))?;
    if a.json {
        let j = serde_json::json!({
            "params": s.num_params,
            "max_rel_diff": s.max_rel_diff,
            "csv": s.csv,
            "svg": s.svg,
            "universal": s.universal_dir,
        });
        say!("{j}");
    } else {
        say!(
            "trained a {}-parameter transformer at TP=2 to step {}, saved sharded, converted",
            s.num_params,
            a.save_at
        );
        for (tp, d) in &s.max_rel_diff {
            say!("resumed at TP={tp}: largest relative loss difference to the uninterrupted run {d:.2e}");
        }
        say!("loss curves: {} and {}", s.csv.display(), s.svg.display());
    }
    Ok(())
}
