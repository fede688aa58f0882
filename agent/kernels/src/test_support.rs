//! What the kernels' tests share: a deterministic generator (the crate has no
//! dependencies), random f16 scales, the ways a pool may split the work, and the checks
//! every variant must pass.

use crate::dispatch::{self, Variant};
use crate::parallel::Parallel;
use std::ops::Range;

/// A small linear congruential generator.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// f16 bits of a normal value in [2^-10, 2^-3) with either sign.
pub(crate) fn f16_bits(rng: &mut Lcg) -> u16 {
    let exp = 5 + rng.next() % 8;
    let man = rng.next() & 0x3ff;
    let sign = (rng.next() & 1) << 15;
    (sign | (exp << 10) | man) as u16
}

/// All items on the calling thread, in one range.
pub(crate) fn serial(items: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    f(0..items)
}

/// Items split in uneven ranges, the later one first, as a pool might.
pub(crate) fn split(items: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
    let mid = items / 3;
    f(mid..items);
    f(0..mid);
}

/// Every variant this CPU runs, on one thread and split over a pool, gives `want`'s bits;
/// `run(variant, par)` is the kernel's output, `label` names the case.
pub(crate) fn assert_every_variant_gives(
    want: &[f32],
    label: &str,
    run: impl Fn(Variant, Parallel) -> Vec<f32>,
) {
    let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    for v in dispatch::available() {
        for par in [&serial as Parallel, &split as Parallel] {
            let got: Vec<u32> = run(v, par).iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{v:?} {label}");
        }
    }
}

/// For every variant, each of `m` activation rows multiplied alone gives the `n` outputs'
/// bits it gets in the batch of all `m`; `run(variant, rows)` multiplies activation rows
/// `rows` (on one thread).
pub(crate) fn assert_rows_alone_match_batch(
    m: usize,
    n: usize,
    run: impl Fn(Variant, Range<usize>) -> Vec<f32>,
) {
    for v in dispatch::available() {
        let batch = run(v, 0..m);
        for r in 0..m {
            let alone = run(v, r..r + 1);
            let in_batch = &batch[r * n..(r + 1) * n];
            let same = alone
                .iter()
                .zip(in_batch)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{v:?} row {r}: {alone:?} vs {in_batch:?}");
        }
    }
}
