//! Every target body on its seed corpus (built from the fixtures) and on every input a fuzzer ever
//! crashed it with (`regressions/<target>/`): no panic. Each mutated input a fuzzer found is kept here.

use std::path::Path;
use uc_fuzz::TARGETS;

fn body(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|t| t.1)
        .unwrap()
}

#[test]
fn seeds_run_clean() {
    let Some(fx) = uc_fuzz::corpus::fixtures_root() else {
        eprintln!("skipping: no fixtures");
        return;
    };
    let seeds = uc_fuzz::corpus::build(&fx);
    for (name, _) in TARGETS {
        let list = seeds.get(name).map_or(&[][..], Vec::as_slice);
        assert!(!list.is_empty(), "target {name} has no seeds");
        for s in list {
            body(name)(s);
        }
    }
}

#[test]
fn regressions_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for (name, f) in TARGETS {
        let Ok(rd) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            f(&data);
        }
    }
}

#[test]
fn truncations_and_bit_flips_of_seeds_run_clean() {
    let Some(fx) = uc_fuzz::corpus::fixtures_root() else {
        return;
    };
    let seeds = uc_fuzz::corpus::build(&fx);
    for (name, f) in TARGETS {
        // deepspeed_states and native write files per input; a few cuts each keep this quick.
        let Some(s) = seeds.get(name).and_then(|l| l.first()) else {
            continue;
        };
        let step = (s.len() / 97).max(1);
        for cut in (0..s.len()).step_by(step) {
            f(&s[..cut]);
            let mut flipped = s.clone();
            flipped[cut] ^= 0x5a;
            f(&flipped);
        }
    }
}
