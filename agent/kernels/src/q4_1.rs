//! Q4_1 weight × Q8_1 activation matmul: a GGUF's 4-bit weights multiplied as stored, as
//! llama.cpp does, instead of a re-quantised 8-bit copy (84 MB read per SmolLM2 token
//! instead of 143 MB).
//!
//! Per output element the arithmetic is exactly candle 0.11's `vec_dot_q4_1_q8_1`: per
//! block the whole 32-product integer dot `sumi`, then in f32
//! `sum = sum + (sumi · d_w · d_a + m_w · s_a)`, blocks in order, no fused multiply-add.
//! The SIMD variants put eight weight rows in the eight lanes of a float vector, so each
//! lane runs that scalar sequence for its own row and no horizontal float sum is needed;
//! the integer dots are exact whatever instructions form them. Hence every variant, every
//! tile shape and every number of activation rows gives the same bits (ragged batches rely
//! on a row computing the same alone and in a batch).

use crate::dispatch::{self, Variant};
pub use crate::grouped::GROUP;
use crate::grouped::{group_bodies, matmul_groups, Grouped};
use crate::parallel::Parallel;
use crate::q8_0::f16_to_f32;
use std::ops::Range;

/// A Q4_1 block as ggml stores it: f16 scale and minimum, 32 4-bit quants (element `j`
/// in the low nibble of byte `j`, element `16 + j` in its high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<Block>() == 20);

/// A Q8_1 activation block as candle stores it: f16 scale, f16 `s` (≈ d · Σ qs), 32
/// signed quants.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ActBlock {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<ActBlock>() == 36);

/// Values per block.
pub const QK: usize = 32;

/// One block column of a group of eight weight rows, stored together so that the kernel
/// reads the weights as one sequential stream and loads eight scales with one instruction.
/// Same 20 bytes per row-block as the GGUF layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GroupBlock {
    d: [u16; GROUP],
    m: [u16; GROUP],
    qs: [[u8; 16]; GROUP],
}

/// A Q4_1 matrix (`n` rows of `kb` blocks) repacked for the kernel.
pub type Packed = Grouped<GroupBlock>;

impl Packed {
    /// Repacks `w`, row-major `n` rows of `kb` blocks. Panics when the length differs.
    pub fn new(w: &[Block], n: usize, kb: usize) -> Self {
        let zero = GroupBlock {
            d: [0; GROUP],
            m: [0; GROUP],
            qs: [[0; 16]; GROUP],
        };
        Grouped::repack("q4_1", w, n, kb, zero, |gb, lane, src: &Block| {
            gb.d[lane] = src.d;
            gb.m[lane] = src.m;
            gb.qs[lane] = src.qs;
        })
    }
}

/// Quantised activations: rows of `kb` blocks, their `d` and `s` widened to f32.
pub struct Acts<'a> {
    pub blocks: &'a [ActBlock],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub kb: usize,
}

/// `out[r·n + c] = Σ_b (sumi · d_w · d_a + m_w · s_a)` for the `m` rows of `a`, with the
/// variant this process selected (`dispatch::selected`).
pub fn matmul(w: &Packed, a: &Acts, m: usize, out: &mut [f32], par: Parallel) {
    matmul_with(dispatch::selected(), w, a, m, out, par)
}

/// As `matmul` with a given variant. Panics when the slices do not match the shapes or
/// the CPU cannot run `variant`.
pub fn matmul_with(
    variant: Variant,
    w: &Packed,
    a: &Acts,
    m: usize,
    out: &mut [f32],
    par: Parallel,
) {
    assert_eq!(a.kb, w.kb, "activation and weight widths");
    assert_eq!(a.blocks.len(), m * a.kb, "activation blocks");
    assert_eq!(a.d.len(), m * a.kb, "activation scales");
    assert_eq!(a.s.len(), m * a.kb, "activation sums");
    matmul_groups(variant, w, a, m, out, par, group_bodies!());
}

/// The definition: candle's scalar `vec_dot_q4_1_q8_1` for each of the group's rows.
///
/// # Safety
/// As `GroupRows`.
unsafe fn scalar_group(w: &Packed, a: &Acts, g: usize, rows: Range<usize>, out: *mut f32) {
    let kb = w.kb;
    for r in rows {
        let mut acc = [0f32; GROUP];
        for b in 0..kb {
            let gb = &w.groups[g * kb + b];
            let y = &a.blocks[r * kb + b].qs;
            let (da, sa) = (a.d[r * kb + b], a.s[r * kb + b]);
            for (i, lane) in acc.iter_mut().enumerate() {
                let mut sumi = 0i32;
                for (j, &q) in gb.qs[i].iter().enumerate() {
                    sumi += (q & 0x0F) as i32 * y[j] as i32 + (q >> 4) as i32 * y[j + 16] as i32;
                }
                let t = sumi as f32 * f16_to_f32(gb.d[i]) * da;
                *lane += t + f16_to_f32(gb.m[i]) * sa;
            }
        }
        w.store(g, r, &acc, out);
    }
}

/// The AVX2 and AVX-512 VNNI bodies: the same code compiled twice, with each variant's
/// integer dot (a macro, so both copies are compiled with their own CPU features and
/// everything inlines).
#[cfg(target_arch = "x86_64")]
macro_rules! avx_variant {
    ($module:ident, $features:literal, $dot:path) => {
        mod $module {
            use super::{Acts, Packed, GROUP};
            use std::arch::x86_64::*;
            use std::ops::Range;

            /// Activation rows per tile: each weight block is unpacked once for them.
            const RN: usize = 4;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn group(
                w: &Packed,
                a: &Acts,
                g: usize,
                rows: Range<usize>,
                out: *mut f32,
            ) {
                let mut r = rows.start;
                while r + RN <= rows.end {
                    tile::<RN>(w, a, g, r, out);
                    r += RN;
                }
                while r < rows.end {
                    tile::<1>(w, a, g, r, out);
                    r += 1;
                }
            }

            /// Rows r..r+N of activations against the group's eight weight rows.
            #[target_feature(enable = $features)]
            // Index loops over the const tile size keep the vectors in registers.
            #[allow(clippy::needless_range_loop)]
            unsafe fn tile<const N: usize>(
                w: &Packed,
                a: &Acts,
                g: usize,
                r: usize,
                out: *mut f32,
            ) {
                let kb = w.kb;
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); N];
                let gbs = w.groups.as_ptr().add(g * kb);
                for b in 0..kb {
                    let gb = &*gbs.add(b);
                    let mut ys = [_mm256_setzero_si256(); N];
                    for j in 0..N {
                        let blk = a.blocks.get_unchecked((r + j) * kb + b);
                        ys[j] = _mm256_loadu_si256(blk.qs.as_ptr().cast());
                    }
                    // Per activation row, the eight weight rows' i32 lanes reduced to one
                    // sum per row (lane i = weight row i). Integer sums: exact in any order.
                    let mut quads = [[_mm256_setzero_si256(); 2]; N];
                    for half in 0..2 {
                        let mut pairs = [[_mm256_setzero_si256(); 2]; N];
                        for p in 0..2 {
                            let i = half * 4 + p * 2;
                            let w0 = unpack(&gb.qs[i], mask);
                            let w1 = unpack(&gb.qs[i + 1], mask);
                            for j in 0..N {
                                pairs[j][p] = _mm256_hadd_epi32($dot(w0, ys[j]), $dot(w1, ys[j]));
                            }
                        }
                        for j in 0..N {
                            quads[j][half] = _mm256_hadd_epi32(pairs[j][0], pairs[j][1]);
                        }
                    }
                    let dx = _mm256_cvtph_ps(_mm_loadu_si128(gb.d.as_ptr().cast()));
                    let mx = _mm256_cvtph_ps(_mm_loadu_si128(gb.m.as_ptr().cast()));
                    for j in 0..N {
                        // quads: [r0..r3 low halves | r0..r3 high halves], [r4..r7 …].
                        let lo = _mm256_permute2x128_si256(quads[j][0], quads[j][1], 0x20);
                        let hi = _mm256_permute2x128_si256(quads[j][0], quads[j][1], 0x31);
                        let sumi = _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
                        let k = (r + j) * kb + b;
                        let da = _mm256_set1_ps(*a.d.get_unchecked(k));
                        let sa = _mm256_set1_ps(*a.s.get_unchecked(k));
                        // candle's order: (sumi · d_w) · d_a + m_w · s_a, then the add.
                        let t = _mm256_mul_ps(_mm256_mul_ps(sumi, dx), da);
                        let u = _mm256_add_ps(t, _mm256_mul_ps(mx, sa));
                        acc[j] = _mm256_add_ps(acc[j], u);
                    }
                }
                for j in 0..N {
                    let mut lanes = [0f32; GROUP];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[j]);
                    w.store(g, r + j, &lanes, out);
                }
            }

            /// 16 bytes of nibbles → 32 bytes 0..15 in element order (low nibbles, then
            /// high nibbles).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unpack(qs: &[u8; 16], mask: __m256i) -> __m256i {
                let x = _mm_loadu_si128(qs.as_ptr().cast());
                let hi = _mm_srli_epi16(x, 4);
                _mm256_and_si256(_mm256_set_m128i(hi, x), mask)
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

    fn weights(n: usize, kb: usize, seed: u64) -> Vec<Block> {
        let mut rng = Lcg(seed);
        (0..n * kb)
            .map(|_| Block {
                d: f16_bits(&mut rng) & 0x7fff,
                m: f16_bits(&mut rng),
                qs: std::array::from_fn(|_| rng.next() as u8),
            })
            .collect()
    }

    struct OwnedActs {
        blocks: Vec<ActBlock>,
        d: Vec<f32>,
        s: Vec<f32>,
    }

    fn acts(m: usize, kb: usize, seed: u64) -> OwnedActs {
        let mut rng = Lcg(seed);
        let blocks: Vec<ActBlock> = (0..m * kb)
            .map(|_| ActBlock {
                d: f16_bits(&mut rng) & 0x7fff,
                s: f16_bits(&mut rng),
                // The full i8 range, -128 included (the AVX2 path must not saturate).
                qs: std::array::from_fn(|_| rng.next() as i8),
            })
            .collect();
        let d = blocks.iter().map(|b| f16_to_f32(b.d)).collect();
        let s = blocks.iter().map(|b| f16_to_f32(b.s)).collect();
        OwnedActs { blocks, d, s }
    }

    /// candle's `vec_dot_q4_1_q8_1`, written from its definition on the unpacked blocks.
    fn reference(w: &[Block], a: &OwnedActs, m: usize, n: usize, kb: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut sumf = 0f32;
                for b in 0..kb {
                    let (x, y) = (&w[c * kb + b], &a.blocks[r * kb + b]);
                    let mut sumi = 0i32;
                    for j in 0..16 {
                        let v0 = (x.qs[j] & 0x0F) as i32;
                        let v1 = (x.qs[j] >> 4) as i32;
                        sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + 16] as i32;
                    }
                    sumf += sumi as f32 * f16_to_f32(x.d) * f16_to_f32(y.d)
                        + f16_to_f32(x.m) * f16_to_f32(y.s);
                }
                out[r * n + c] = sumf;
            }
        }
        out
    }

    fn run(v: Variant, p: &Packed, a: &OwnedActs, m: usize, par: Parallel) -> Vec<f32> {
        let mut out = vec![f32::NAN; m * p.rows()];
        let acts = Acts {
            blocks: &a.blocks,
            d: &a.d,
            s: &a.s,
            kb: p.blocks_per_row(),
        };
        matmul_with(v, p, &acts, m, &mut out, par);
        out
    }

    #[test]
    fn every_variant_equals_the_definition_bit_for_bit() {
        // Shapes: a partial last group (n = 13), decode (m = 1), a ragged tile tail (m = 7),
        // more rows than one chunk (m = 70), one block per row.
        for &(m, n, kb) in &[(1, 8, 2), (7, 13, 3), (70, 24, 4), (5, 3, 1), (2, 64, 18)] {
            let w = weights(n, kb, 11 + n as u64);
            let a = acts(m, kb, 5 + m as u64);
            let want: Vec<u32> = reference(&w, &a, m, n, kb)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let p = Packed::new(&w, n, kb);
            for v in dispatch::available() {
                for par in [&serial as Parallel, &split as Parallel] {
                    let got: Vec<u32> =
                        run(v, &p, &a, m, par).iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "{v:?} m={m} n={n} kb={kb}");
                }
            }
        }
    }

    #[test]
    fn a_row_alone_equals_the_same_row_in_a_batch() {
        let (m, n, kb) = (9, 16, 5);
        let w = weights(n, kb, 3);
        let a = acts(m, kb, 4);
        let p = Packed::new(&w, n, kb);
        for v in dispatch::available() {
            let batch = run(v, &p, &a, m, &serial);
            for r in 0..m {
                let one = OwnedActs {
                    blocks: a.blocks[r * kb..(r + 1) * kb].to_vec(),
                    d: a.d[r * kb..(r + 1) * kb].to_vec(),
                    s: a.s[r * kb..(r + 1) * kb].to_vec(),
                };
                let alone = run(v, &p, &one, 1, &serial);
                let same = alone
                    .iter()
                    .zip(&batch[r * n..(r + 1) * n])
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{v:?} row {r}: {alone:?} vs {:?}",
                    &batch[r * n..(r + 1) * n]
                );
            }
        }
    }

    #[test]
    fn packing_keeps_every_block() {
        let (n, kb) = (11, 3);
        let w = weights(n, kb, 9);
        let p = Packed::new(&w, n, kb);
        assert_eq!(p.bytes(), 2 * kb * 160);
        for r in 0..n {
            for b in 0..kb {
                let gb = &p.groups[(r / GROUP) * kb + b];
                let (i, src) = (r % GROUP, &w[r * kb + b]);
                assert_eq!((gb.d[i], gb.m[i], gb.qs[i]), (src.d, src.m, src.qs));
            }
        }
        // Padding rows are zero.
        assert!(p.groups[kb..].iter().all(|gb| gb.qs[3..] == [[0u8; 16]; 5]));
    }
}
