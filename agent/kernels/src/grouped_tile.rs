//! The loop bodies every grouped format (`q4_1.rs`, `q5_0.rs`) runs, written once: the
//! scalar definition and the AVX2 / AVX-512 VNNI tiles. A format brings only what differs
//! (`GroupFormat`): how a row-block's 32 weights unpack and how a block's integer dot
//! becomes its float contribution. Its methods are `#[inline(always)]`, so each
//! monomorphised tile compiles to the same code as a hand-written one.
//!
//! The SIMD tiles put the group's eight weight rows in the eight lanes of a float vector,
//! so each lane runs the scalar float sequence for its own row and no horizontal float sum
//! is needed; the integer dots are exact whatever instructions form them. Hence every
//! variant, tile shape and number of activation rows gives the same bits.

use crate::dispatch::Variant;
use crate::grouped::{GroupRows, Grouped, GROUP};
use std::ops::Range;

/// What a weight format grouped by `Grouped` tells the shared bodies. Implemented by the
/// format's activations (`Acts`), which the float step reads.
pub(crate) trait GroupFormat: Sync {
    /// One block column of a group: `GROUP` rows' blocks of 32 weights.
    type Block: Copy + Sync;

    /// Activation block `k`'s 32 quants.
    ///
    /// # Safety
    /// `k` is below the number of activation blocks.
    unsafe fn quants(&self, k: usize) -> &[i8; 32];

    /// Row `lane`'s 32 weights in `gb`, in element order, as the definition's integers.
    fn weights(gb: &Self::Block, lane: usize) -> [i8; 32];

    /// `acc` plus row `lane`'s contribution from activation block `k`, whose integer dot
    /// with `weights(gb, lane)` is `sumi`, in candle's float order.
    fn add_block(&self, acc: f32, sumi: i32, gb: &Self::Block, lane: usize, k: usize) -> f32;

    /// The group block's float values loaded once for every activation row (scales).
    #[cfg(target_arch = "x86_64")]
    type Scales: Copy;

    /// Row `lane`'s 32 weights in `gb` as unsigned bytes, in element order, for the
    /// unsigned × signed byte dot. Must keep every pair of products inside i16 (the AVX2 dot).
    ///
    /// # Safety
    /// The CPU runs AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack(gb: &Self::Block, lane: usize) -> std::arch::x86_64::__m256i;

    /// # Safety
    /// The CPU runs AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn scales(gb: &Self::Block) -> Self::Scales;

    /// `acc` plus the eight rows' contributions from activation block `k`: lane `i` of
    /// `dots` is row `i`'s Σ unpack · quants.
    ///
    /// # Safety
    /// The CPU runs AVX2; `k` is below the number of activation blocks.
    #[cfg(target_arch = "x86_64")]
    unsafe fn add_block_x8(
        &self,
        acc: std::arch::x86_64::__m256,
        dots: std::arch::x86_64::__m256i,
        scales: Self::Scales,
        k: usize,
    ) -> std::arch::x86_64::__m256;
}

/// The body for `variant`, for `grouped::matmul_groups`.
pub(crate) fn body<F: GroupFormat>(variant: Variant) -> GroupRows<F::Block, F> {
    // Through closures: `#[target_feature]` fns do not coerce to the pointer type.
    // SAFETY (the closures): `matmul_groups` calls them under `GroupRows`' contract.
    match variant {
        Variant::Scalar => scalar_group::<F>,
        #[cfg(target_arch = "x86_64")]
        Variant::Avx2 => |w, a, g, rows, out| unsafe { avx2::group(w, a, g, rows, out) },
        #[cfg(target_arch = "x86_64")]
        Variant::Avx512Vnni => {
            |w, a, g, rows, out| unsafe { avx512vnni::group(w, a, g, rows, out) }
        }
        // Elsewhere only the scalar variant is available (`matmul_groups` checks).
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar_group::<F>,
    }
}

/// The definition: candle's scalar `vec_dot` for each of the group's rows.
///
/// # Safety
/// As `GroupRows`.
unsafe fn scalar_group<F: GroupFormat>(
    w: &Grouped<F::Block>,
    a: &F,
    g: usize,
    rows: Range<usize>,
    out: *mut f32,
) {
    let kb = w.kb;
    for r in rows {
        let mut acc = [0f32; GROUP];
        for b in 0..kb {
            let gb = &w.groups[g * kb + b];
            let k = r * kb + b;
            let y = a.quants(k);
            for (i, lane) in acc.iter_mut().enumerate() {
                let x = F::weights(gb, i);
                let sumi: i32 = x.iter().zip(y).map(|(&x, &y)| x as i32 * y as i32).sum();
                *lane = a.add_block(*lane, sumi, gb, i, k);
            }
        }
        w.store(g, r, &acc, out);
    }
}

/// The AVX2 and AVX-512 VNNI tiles: the same code compiled twice, with each variant's
/// integer dot (a macro, so both copies are compiled with their own CPU features and
/// everything inlines).
#[cfg(target_arch = "x86_64")]
macro_rules! simd_tile {
    ($module:ident, $features:literal, $dot:path) => {
        pub(crate) mod $module {
            use super::GroupFormat;
            use crate::grouped::{Grouped, GROUP};
            use std::arch::x86_64::*;
            use std::ops::Range;

            /// Activation rows per tile: each weight block is unpacked once for them.
            const RN: usize = 4;

            /// # Safety
            /// As `GroupRows`.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn group<F: GroupFormat>(
                w: &Grouped<F::Block>,
                a: &F,
                g: usize,
                rows: Range<usize>,
                out: *mut f32,
            ) {
                let mut r = rows.start;
                while r + RN <= rows.end {
                    tile::<F, RN>(w, a, g, r, out);
                    r += RN;
                }
                while r < rows.end {
                    tile::<F, 1>(w, a, g, r, out);
                    r += 1;
                }
            }

            /// Rows r..r+N of activations against the group's eight weight rows.
            #[target_feature(enable = $features)]
            // Index loops over the const tile size keep the vectors in registers.
            #[allow(clippy::needless_range_loop)]
            unsafe fn tile<F: GroupFormat, const N: usize>(
                w: &Grouped<F::Block>,
                a: &F,
                g: usize,
                r: usize,
                out: *mut f32,
            ) {
                let kb = w.kb;
                let mut acc = [_mm256_setzero_ps(); N];
                let gbs = w.groups.as_ptr().add(g * kb);
                for b in 0..kb {
                    let gb = &*gbs.add(b);
                    let mut ys = [_mm256_setzero_si256(); N];
                    for j in 0..N {
                        ys[j] = _mm256_loadu_si256(a.quants((r + j) * kb + b).as_ptr().cast());
                    }
                    // Per activation row, the eight weight rows' i32 lanes reduced to one
                    // sum per row (lane i = weight row i). Integer sums: exact in any order.
                    let mut quads = [[_mm256_setzero_si256(); 2]; N];
                    for half in 0..2 {
                        let mut pairs = [[_mm256_setzero_si256(); 2]; N];
                        for p in 0..2 {
                            let i = half * 4 + p * 2;
                            let w0 = F::unpack(gb, i);
                            let w1 = F::unpack(gb, i + 1);
                            for j in 0..N {
                                pairs[j][p] = _mm256_hadd_epi32($dot(w0, ys[j]), $dot(w1, ys[j]));
                            }
                        }
                        for j in 0..N {
                            quads[j][half] = _mm256_hadd_epi32(pairs[j][0], pairs[j][1]);
                        }
                    }
                    let scales = F::scales(gb);
                    for j in 0..N {
                        // quads: [r0..r3 low halves | r0..r3 high halves], [r4..r7 …].
                        let lo = _mm256_permute2x128_si256(quads[j][0], quads[j][1], 0x20);
                        let hi = _mm256_permute2x128_si256(quads[j][0], quads[j][1], 0x31);
                        let dots = _mm256_add_epi32(lo, hi);
                        acc[j] = a.add_block_x8(acc[j], dots, scales, (r + j) * kb + b);
                    }
                }
                for j in 0..N {
                    let mut lanes = [0f32; GROUP];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[j]);
                    w.store(g, r + j, &lanes, out);
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
crate::dispatch::simd_variants!(simd_tile);
