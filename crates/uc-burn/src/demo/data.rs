//! The synthetic corpus: sequences from a fixed sparse bigram table, so there is something to learn.

/// A small deterministic generator (PCG-style LCG).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in `[-0.5, 0.5)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }
}

/// Batch of step `step`: `batch` sequences of `seq + 1` tokens below `vocab`, the same in every run.
pub fn batch(step: u64, batch: usize, seq: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let v = vocab.max(1) as u32;
    // Each token has 3 likely successors, fixed by the seed.
    let next = |tok: u32, pick: u32| -> u32 {
        let mut r = Rng::new(seed ^ (tok as u64) << 8 ^ pick as u64);
        r.next_u32() % v
    };
    let mut r = Rng::new(seed.wrapping_add(step.wrapping_mul(0x9E37_79B9)));
    let mut out = Vec::with_capacity(batch * (seq + 1));
    for _ in 0..batch {
        let mut tok = r.next_u32() % v;
        out.push(tok);
        for _ in 0..seq {
            tok = match r.next_u32() % 10 {
                0 => r.next_u32() % v,
                k => next(tok, k % 3),
            };
            out.push(tok);
        }
    }
    out
}
