//! `uc-fuzz-corpus OUT_DIR`: writes the seed corpus of every fuzz target under `OUT_DIR/<target>/`.

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: uc-fuzz-corpus OUT_DIR");
        std::process::exit(2);
    };
    let Some(fixtures) = uc_fuzz::corpus::fixtures_root() else {
        eprintln!("uc-fuzz-corpus: no ../shared/fixtures (set UC_SHARED); no seeds written");
        std::process::exit(1);
    };
    let seeds = uc_fuzz::corpus::build(&fixtures);
    match uc_fuzz::corpus::write(std::path::Path::new(&out), &seeds) {
        Ok(n) => {
            for (t, s) in &seeds {
                eprintln!("{t}: {} seeds", s.len());
            }
            eprintln!("{n} seeds in {}", std::path::Path::new(&out).display());
        }
        Err(e) => {
            eprintln!(
                "uc-fuzz-corpus: {}: {e}",
                std::path::Path::new(&out).display()
            );
            std::process::exit(1);
        }
    }
}
