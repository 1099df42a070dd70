//! `cargo run -p uc-burn --example demo -- --out DIR [--steps 200] [--save-at 100]`: train at TP=2, save
//! sharded, convert, resume at TP=1 and TP=4; writes DIR/loss.csv and DIR/loss.svg.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut opts = uc_burn::demo::DemoOptions::default();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Option<u64> {
            let v = args.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{what} needs a number");
            }
            v
        };
        match a.as_str() {
            "--out" => {}
            "--steps" => match num("--steps") {
                Some(v) => opts.steps = v,
                None => return ExitCode::from(2),
            },
            "--save-at" => match num("--save-at") {
                Some(v) => opts.save_at = v,
                None => return ExitCode::from(2),
            },
            _ => {
                eprintln!(
                    "unknown argument `{a}`; usage: demo --out DIR [--steps N] [--save-at N]"
                );
                return ExitCode::from(2);
            }
        }
        if a == "--out" {
            out = args.next().map(PathBuf::from);
        }
    }
    let Some(out) = out else {
        eprintln!("usage: demo --out DIR [--steps N] [--save-at N]");
        return ExitCode::from(2);
    };
    let t = std::time::Instant::now();
    match uc_burn::demo::run(&out, &opts) {
        Ok(s) => {
            println!(
                "model: {} parameters; {} steps, saved at step {} (TP=2)",
                s.num_params, opts.steps, opts.save_at
            );
            println!("sharded checkpoint: {}", s.sharded_dir.display());
            println!("universal checkpoint: {}", s.universal_dir.display());
            for (tp, d) in &s.max_rel_diff {
                let l = &s.load[tp];
                println!(
                    "resumed at TP={tp}: state bitwise equal to the saved one; max relative loss difference {d:.2e}; read {} of {} bytes needed ({:.3}x)",
                    l.bytes_read,
                    l.bytes_needed,
                    l.ratio()
                );
            }
            let last = s.uninterrupted.last().map_or(f64::NAN, |p| p.1);
            println!(
                "final loss {last:.5} (step 1: {:.5}); {:.1}s",
                s.uninterrupted[0].1,
                t.elapsed().as_secs_f64()
            );
            println!("wrote {} and {}", s.csv.display(), s.svg.display());
            if s.max_rel_diff.values().any(|&d| d > opts.tolerance) {
                eprintln!("resumed losses differ by more than {:e}", opts.tolerance);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
