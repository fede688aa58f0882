//! Times the Q4_1 and Q5_0 matmuls on one thread at SmolLM2-135M and Gemma-3-270M shapes,
//! for each SIMD variant this CPU runs: the median of 5 timed runs, printed as µs per
//! matmul. For comparing a kernel change before and after on one machine:
//! `cargo run --release -p lem-kernels --example bench_grouped [MACS_PER_RUN]` (a small
//! count, e.g. 10000000, suits an instruction counter such as `valgrind --tool=callgrind`).

use lem_kernels::dispatch::{self, Variant};
use lem_kernels::{q4_1, q5_0, q8_0};
use std::ops::Range;
use std::time::Instant;

/// Timed runs per case; the median is reported.
const RUNS: usize = 5;
/// Multiply-adds per timed run unless the first argument says otherwise (about 0.1–1 s per
/// run here), so small shapes repeat more.
const DEFAULT_MACS_PER_RUN: usize = 2_000_000_000;

fn serial(items: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    f(0..items)
}

/// A small linear congruential generator (the crate has no dependencies).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// f16 bits of a small normal value (exponent 5..13, either sign).
    fn f16(&mut self) -> u16 {
        let exp = 5 + self.next() % 8;
        ((self.next() & 1) << 15 | exp << 10 | (self.next() & 0x3ff)) as u16
    }
}

/// Median µs of `RUNS` runs of `reps` calls of `f`.
fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm the caches and page in the buffers
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / reps as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn bench_q4_1(v: Variant, m: usize, n: usize, k: usize) -> f64 {
    let (kb, mut rng) = (k / q4_1::QK, Lcg(1));
    let w: Vec<q4_1::Block> = (0..n * kb)
        .map(|_| q4_1::Block {
            d: rng.f16() & 0x7fff,
            m: rng.f16(),
            qs: std::array::from_fn(|_| rng.next() as u8),
        })
        .collect();
    let blocks: Vec<q4_1::ActBlock> = (0..m * kb)
        .map(|_| q4_1::ActBlock {
            d: rng.f16() & 0x7fff,
            s: rng.f16(),
            qs: std::array::from_fn(|_| rng.next() as i8),
        })
        .collect();
    let d: Vec<f32> = blocks.iter().map(|b| q8_0::f16_to_f32(b.d)).collect();
    let s: Vec<f32> = blocks.iter().map(|b| q8_0::f16_to_f32(b.s)).collect();
    let p = q4_1::Packed::new(&w, n, kb);
    let a = q4_1::Acts {
        blocks: &blocks,
        d: &d,
        s: &s,
        kb,
    };
    let mut out = vec![0f32; m * n];
    median_us(reps(m, n, k), || {
        q4_1::matmul_with(v, &p, &a, m, &mut out, &serial)
    })
}

fn bench_q5_0(v: Variant, m: usize, n: usize, k: usize) -> f64 {
    let (kb, mut rng) = (k / q5_0::QK, Lcg(2));
    let w: Vec<q5_0::Block> = (0..n * kb)
        .map(|_| q5_0::Block {
            d: rng.f16(),
            qh: rng.next().to_le_bytes(),
            qs: std::array::from_fn(|_| rng.next() as u8),
        })
        .collect();
    let blocks: Vec<q8_0::Block> = (0..m * kb)
        .map(|_| q8_0::Block {
            d: rng.f16() & 0x7fff,
            qs: std::array::from_fn(|_| rng.next() as i8),
        })
        .collect();
    let d: Vec<f32> = blocks.iter().map(|b| q8_0::f16_to_f32(b.d)).collect();
    let sums: Vec<i32> = blocks.iter().map(q5_0::quant_sum).collect();
    let p = q5_0::Packed::new(&w, n, kb);
    let a = q5_0::Acts {
        blocks: &blocks,
        d: &d,
        sums: &sums,
        kb,
    };
    let mut out = vec![0f32; m * n];
    median_us(reps(m, n, k), || {
        q5_0::matmul_with(v, &p, &a, m, &mut out, &serial)
    })
}

fn reps(m: usize, n: usize, k: usize) -> usize {
    let macs_per_run = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .unwrap_or_else(|_| panic!("MACS_PER_RUN {arg:?}: not a whole number")),
        None => DEFAULT_MACS_PER_RUN,
    };
    (macs_per_run / (m * n * k)).max(1)
}

fn main() {
    // (m activation rows, n weight rows, k width): decode and a 64-token prefill.
    // SmolLM2-135M (Q4_1 file): gate/up (1536 × 576), down (576 × 1536).
    // Gemma-3-270M (Q4_K_M file, Q5_0 for Q and gate/up): q (1024 × 640), gate/up (2048 × 640).
    let q4_1_shapes = [(1, 1536, 576), (1, 576, 1536), (64, 1536, 576)];
    let q5_0_shapes = [(1, 1024, 640), (1, 2048, 640), (64, 2048, 640)];
    println!("kernel variant m n k median_us");
    for v in dispatch::available() {
        if v == Variant::Scalar {
            continue;
        }
        for &(m, n, k) in &q4_1_shapes {
            let us = bench_q4_1(v, m, n, k);
            println!("q4_1 {} {m} {n} {k} {us:.2}", v.name());
        }
        for &(m, n, k) in &q5_0_shapes {
            let us = bench_q5_0(v, m, n, k);
            println!("q5_0 {} {m} {n} {k} {us:.2}", v.name());
        }
    }
}
