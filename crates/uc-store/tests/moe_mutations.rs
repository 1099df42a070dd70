//! Structured mutations of the native MoE and AutoEP × AutoTP fixtures (one value of one file
//! changed: an int, a shape, a name, a list cut short, a bool flipped): opening and reading every
//! tensor never panics, it succeeds or returns a typed error. `UC_MOE_MUTATIONS` (per case, default
//! 40), `UC_MOE_SEED` and `UC_MOE_ALL=1` (every other DeepSpeed fixture too) run more.

mod common;
use common::{copy_dir, edit_pt, DEEPSPEED, DEEPSPEED_MOE_CASES};
use std::path::Path;
use uc_store::deepspeed::{Assume, DsCheckpoint};
use uc_torch::PtValue;

/// xorshift64*: a fixed-seed generator, so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Counts the non-tensor nodes of `v`.
fn count(v: &PtValue) -> usize {
    1 + match v {
        PtValue::List(l) | PtValue::Tuple(l) => l.iter().map(count).sum(),
        PtValue::Dict(d) | PtValue::OrderedDict(d) => d.iter().map(|(_, v)| count(v)).sum(),
        PtValue::IntDict(d) => d.iter().map(|(_, v)| count(v)).sum(),
        PtValue::Object { state, .. } => count(state),
        _ => 0,
    }
}

/// Mutates node number `*n` (pre-order) of `v`; returns true once done.
fn mutate(v: &mut PtValue<'static>, n: &mut usize, rng: &mut Rng) -> bool {
    if *n == 0 {
        const INTS: [i64; 8] = [0, -1, 1, 2, 3, 7, 1 << 33, i64::MAX];
        *v = match v {
            PtValue::Int(_) => PtValue::Int(INTS[rng.below(INTS.len())]),
            PtValue::Bool(b) => PtValue::Bool(!*b),
            PtValue::Str(s) => PtValue::Str(match rng.below(3) {
                0 => format!("{s}x"),
                1 => s.replace('2', "3").replace('0', "1"),
                _ => String::new(),
            }),
            PtValue::Tuple(l) if rng.below(2) == 0 => {
                let mut l = std::mem::take(l);
                l.pop();
                PtValue::Tuple(l)
            }
            PtValue::List(l) => {
                let mut l = std::mem::take(l);
                l.truncate(l.len() / 2);
                PtValue::List(l)
            }
            PtValue::Dict(d) if !d.is_empty() => {
                let mut d = std::mem::take(d);
                let i = rng.below(d.len());
                d.remove(i);
                PtValue::Dict(d)
            }
            _ => PtValue::None,
        };
        return true;
    }
    *n -= 1;
    let kids: Vec<&mut PtValue<'static>> = match v {
        PtValue::List(l) | PtValue::Tuple(l) => l.iter_mut().collect(),
        PtValue::Dict(d) | PtValue::OrderedDict(d) => d.iter_mut().map(|(_, v)| v).collect(),
        PtValue::IntDict(d) => d.iter_mut().map(|(_, v)| v).collect(),
        PtValue::Object { state, .. } => vec![&mut **state],
        _ => vec![],
    };
    for k in kids {
        if mutate(k, n, rng) {
            return true;
        }
    }
    false
}

#[test]
fn mutated_moe_checkpoints_never_panic() {
    let iterations: usize = std::env::var("UC_MOE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed = std::env::var("UC_MOE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15u64);
    let mut rng = Rng(seed | 1);
    // UC_MOE_ALL=1: every other DeepSpeed fixture too
    let all = std::env::var("UC_MOE_ALL").is_ok_and(|v| v == "1");
    let others = if all { common::DEEPSPEED_CASES } else { &[] };
    for case in DEEPSPEED_MOE_CASES.iter().chain(others) {
        let src = Path::new(DEEPSPEED).join(case).join("global_step3");
        let mut names: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for i in 0..iterations {
            let tmp = tempfile::tempdir().unwrap();
            let tag = tmp.path().join("global_step3");
            copy_dir(&src, &tag);
            let file = tag.join(&names[rng.below(names.len())]);
            let mut what = String::new();
            edit_pt(&file, |v| {
                let mut n = rng.below(count(v));
                what = format!("{file:?} node {n}");
                mutate(v, &mut n, &mut rng);
            });
            let r = std::panic::catch_unwind(|| {
                let Ok(ck) = DsCheckpoint::open(&tag, None, &Assume::default()) else {
                    return;
                };
                for out in ck.outputs() {
                    let _ = ck.read(&out);
                }
            });
            assert!(
                r.is_ok(),
                "{case} iteration {i}: panic after mutating {what}"
            );
        }
    }
}
