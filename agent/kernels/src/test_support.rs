//! What the kernels' tests share: a deterministic generator (the crate has no
//! dependencies), random f16 scales and the ways a pool may split the work.

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
