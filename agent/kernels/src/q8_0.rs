//! Q8_0 weight × Q8_0 activation matmul, tiled for AVX2 + FMA, with an AVX-512 VNNI
//! variant (`dispatch`) whose `vpdpbusd` forms the same integer lanes in one instruction.
//!
//! A tile of `RM` weight rows × `RN` activation rows shares every load and keeps `RM·RN`
//! accumulators in flight; the weight tile stays in L1 while a chunk of activation rows
//! (in L2) streams past it. The arithmetic of each output element is exactly candle 0.11's
//! `vec_dot_q8_0_q8_0` (see `tile`), so results do not depend on the tile a row lands in or
//! on the number of rows.

use crate::dispatch::{self, Variant};
use crate::parallel::{for_each_row_chunk_and_group, Parallel};
use std::ops::Range;

/// A Q8_0 block as ggml and candle store it (`repr(C)`: f16 scale bits, 32 signed bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub d: u16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<Block>() == 34);

/// Values per block.
pub const QK: usize = 32;

/// Whether `matmul` runs here: the selected variant is a SIMD one (there is no scalar
/// Q8_0 variant: without one, callers use candle's own kernel, which gives the same bits).
pub fn available() -> bool {
    variant_runs(dispatch::selected())
}

/// Whether `matmul_with` can run `variant` on this CPU.
pub fn variant_runs(variant: Variant) -> bool {
    variant != Variant::Scalar && variant.available()
}

/// `out[r·n + c] = Σ_b d_w·d_a · (w[c] · a[r])_b`: `w` is `n` rows of `a.kb` blocks, `a`
/// holds `m` rows. Panics when the slices do not match the shapes or `available()` is false.
pub fn matmul(w: &[Block], n: usize, a: &Acts, m: usize, out: &mut [f32], par: Parallel) {
    matmul_with(dispatch::selected(), w, n, a, m, out, par)
}

/// As `matmul` with a given variant; panics unless `variant_runs(variant)`.
pub fn matmul_with(
    variant: Variant,
    w: &[Block],
    n: usize,
    a: &Acts,
    m: usize,
    out: &mut [f32],
    par: Parallel,
) {
    assert!(
        variant_runs(variant),
        "q8_0 matmul: {variant:?} does not run here"
    );
    assert_eq!(w.len(), n * a.kb, "weight blocks");
    assert_eq!(a.blocks.len(), m * a.kb, "activation blocks");
    assert_eq!(a.scales.len(), m * a.kb, "activation scales");
    assert_eq!(out.len(), m * n, "output length");
    for_each_row_chunk_and_group(
        m,
        n.div_ceil(RM),
        out,
        par,
        |w_scales: &mut Vec<f32>, rows, group, out| {
            let cols = group * RM..n.min((group + 1) * RM);
            // SAFETY: each call writes only its (rows, cols) cells of `out`; the variant
            // runs here (asserted above).
            unsafe { group_rows(variant, w, w_scales, a, rows, cols, n, out) };
        },
    );
}

/// Quantised activations: rows of `kb` blocks, with their scales widened to f32.
pub struct Acts<'a> {
    pub blocks: &'a [Block],
    pub scales: &'a [f32],
    pub kb: usize,
}

/// Weight rows per tile.
const RM: usize = 4;
/// Activation rows per tile.
const RN: usize = 2;

/// Output cells (rows × cols) for one group of ≤ RM weight rows.
///
/// # Safety
/// `out` must hold `m × n` floats and no other thread may write these cells; the CPU must
/// run `variant`.
#[allow(clippy::too_many_arguments)]
unsafe fn group_rows(
    variant: Variant,
    w: &[Block],
    w_scales: &mut Vec<f32>,
    a: &Acts,
    rows: Range<usize>,
    cols: Range<usize>,
    n: usize,
    out: *mut f32,
) {
    let kb = a.kb;
    let wr = &w[cols.start * kb..cols.end * kb];
    w_scales.clear();
    w_scales.extend(wr.iter().map(|b| f16_to_f32(b.d)));
    #[cfg(target_arch = "x86_64")]
    match variant {
        Variant::Avx512Vnni => avx512vnni::group(wr, w_scales, a, rows, cols, n, out),
        _ => avx2::group(wr, w_scales, a, rows, cols, n, out),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (variant, wr, rows, cols, n, out);
}

/// Exact f16 → f32 (every f16 is representable in f32).
#[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
pub fn f16_to_f32(h: u16) -> f32 {
    use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32};
    // SAFETY: F16C is enabled for the whole build (target_feature checked by cfg).
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))) }
}

/// Exact f16 → f32 (every f16 is representable in f32).
#[cfg(not(all(target_arch = "x86_64", target_feature = "f16c")))]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The AVX2 and AVX-512 VNNI bodies: the same code compiled twice with each variant's
/// integer dot (a macro, so each copy is compiled with its own CPU features and inlines).
#[cfg(target_arch = "x86_64")]
macro_rules! avx_variant {
    ($module:ident, $features:literal, $dot:path) => {
        mod $module {
            use super::{Acts, Block, RM, RN};
            use std::arch::x86_64::*;
            use std::ops::Range;

            /// The tiles of one group of weight rows.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn group(
                wr: &[Block],
                w_scales: &[f32],
                a: &Acts,
                rows: Range<usize>,
                cols: Range<usize>,
                n: usize,
                out: *mut f32,
            ) {
                let kb = a.kb;
                let mut r = rows.start;
                if cols.len() == RM {
                    while r + RN <= rows.end {
                        tile::<RM, RN>(wr, w_scales, a, r, cols.start, n, out);
                        r += RN;
                    }
                    while r < rows.end {
                        tile::<RM, 1>(wr, w_scales, a, r, cols.start, n, out);
                        r += 1;
                    }
                } else {
                    // The last group of a width that is not a multiple of RM: one column at a time.
                    for c in 0..cols.len() {
                        let wc = &wr[c * kb..(c + 1) * kb];
                        let sc = &w_scales[c * kb..(c + 1) * kb];
                        for row in r..rows.end {
                            tile::<1, 1>(wc, sc, a, row, cols.start + c, n, out);
                        }
                    }
                }
            }

            /// Out cells (rows r..r+N, columns c..c+M) of the product: weight rows `w` (M rows of
            /// `a.kb` blocks, scales `ws`) against activation rows r..r+N.
            ///
            /// # Safety
            /// AVX2 and FMA; `out` holds row-major rows of `n` floats covering the cells written.
            #[target_feature(enable = $features)]
            // Index loops over the const tile dimensions keep the accumulators in registers.
            #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
            unsafe fn tile<const M: usize, const N: usize>(
                w: &[Block],
                ws: &[f32],
                a: &Acts,
                r: usize,
                c: usize,
                n: usize,
                out: *mut f32,
            ) {
                let kb = a.kb;
                let mut acc = [[_mm256_setzero_ps(); N]; M];
                for b in 0..kb {
                    let mut ys = [_mm256_setzero_si256(); N];
                    let mut dy = [_mm256_setzero_ps(); N];
                    for j in 0..N {
                        let blk = a.blocks.get_unchecked((r + j) * kb + b);
                        ys[j] = _mm256_loadu_si256(blk.qs.as_ptr().cast());
                        dy[j] = _mm256_set1_ps(*a.scales.get_unchecked((r + j) * kb + b));
                    }
                    for i in 0..M {
                        let x = _mm256_loadu_si256(w.get_unchecked(i * kb + b).qs.as_ptr().cast());
                        // Broadcast from memory: a load, no shuffle.
                        let dx = _mm256_set1_ps(*ws.get_unchecked(i * kb + b));
                        // As candle: |w| (unsigned) times a with w's sign, pairs summed to i16,
                        // then to i32 lanes of four products each.
                        let ax = _mm256_sign_epi8(x, x);
                        for j in 0..N {
                            let sy = _mm256_sign_epi8(ys[j], x);
                            let q = _mm256_cvtepi32_ps($dot(ax, sy));
                            // Lane-wise f32(d_w) · f32(d_a): the same product candle forms in scalar.
                            let d = _mm256_mul_ps(dx, dy[j]);
                            acc[i][j] = _mm256_fmadd_ps(d, q, acc[i][j]);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        *out.add((r + j) * n + c + i) = hsum(*v);
                    }
                }
            }

            /// candle's `hsum_float_8`, same order of additions.
            #[target_feature(enable = $features)]
            unsafe fn hsum(x: __m256) -> f32 {
                let res = _mm256_extractf128_ps(x, 1);
                let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
                let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
                let res = _mm_add_ss(res, _mm_movehdup_ps(res));
                _mm_cvtss_f32(res)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
dispatch::simd_variants!(avx_variant);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{f16_bits, serial, split, Lcg};

    /// Blocks with quants in −127..=127, as Q8_0 quantisation makes them (the kernel's
    /// `sign` trick, as candle's, assumes no −128), and scales of either sign unless
    /// `positive`.
    fn blocks(count: usize, seed: u64, positive: bool) -> Vec<Block> {
        let mut rng = Lcg(seed);
        (0..count)
            .map(|_| Block {
                d: f16_bits(&mut rng) & if positive { 0x7fff } else { 0xffff },
                qs: std::array::from_fn(|_| ((rng.next() % 255) as i32 - 127) as i8),
            })
            .collect()
    }

    /// candle's x86 `vec_dot_q8_0_q8_0` from its definition: per block, eight i32 lanes of
    /// four products (lane `l`: bytes `4l..4l + 4`), each fused into its own f32
    /// accumulator times `f32(d_w) · f32(d_a)`, then `hsum_float_8`'s order of additions.
    fn reference(w: &[Block], a: &[Block], m: usize, n: usize, kb: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut acc = [0f32; 8];
                for b in 0..kb {
                    let (x, y) = (&w[c * kb + b], &a[r * kb + b]);
                    let d = f16_to_f32(x.d) * f16_to_f32(y.d);
                    for (l, lane) in acc.iter_mut().enumerate() {
                        let q: i32 = (4 * l..4 * l + 4)
                            .map(|t| x.qs[t] as i32 * y.qs[t] as i32)
                            .sum();
                        *lane = d.mul_add(q as f32, *lane);
                    }
                }
                let s: [f32; 4] = std::array::from_fn(|l| acc[l] + acc[l + 4]);
                out[r * n + c] = (s[0] + s[2]) + (s[1] + s[3]);
            }
        }
        out
    }

    #[test]
    fn every_simd_variant_equals_the_definition_bit_for_bit() {
        let variants: Vec<Variant> = dispatch::available()
            .into_iter()
            .filter(|&v| variant_runs(v))
            .collect();
        if variants.is_empty() {
            eprintln!("SKIPPED: no SIMD variant runs on this CPU");
            return;
        }
        // Shapes: a partial last weight group (n = 6, 13), decode (m = 1), an odd tile
        // tail (m = 7), more rows than one chunk (m = 70), one block per row.
        for &(m, n, kb) in &[(1, 8, 2), (7, 13, 3), (70, 6, 4), (5, 3, 1), (2, 64, 18)] {
            let w = blocks(n * kb, 11 + n as u64, true);
            let acts = blocks(m * kb, 5 + m as u64, false);
            let scales: Vec<f32> = acts.iter().map(|b| f16_to_f32(b.d)).collect();
            let want: Vec<u32> = reference(&w, &acts, m, n, kb)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let a = Acts {
                blocks: &acts,
                scales: &scales,
                kb,
            };
            for &v in &variants {
                for par in [&serial as Parallel, &split as Parallel] {
                    let mut out = vec![f32::NAN; m * n];
                    matmul_with(v, &w, n, &a, m, &mut out, par);
                    let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "{v:?} m={m} n={n} kb={kb}");
                }
            }
        }
    }
}
