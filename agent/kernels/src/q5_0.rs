//! Q5_0 weight × Q8_0 activation matmul: a GGUF's 5-bit weights (Gemma 3's Q4_K_M files
//! store Q, K, gate and up as Q5_0) multiplied as stored. candle 0.11 has only a scalar
//! `vec_dot_q5_0_q8_0`, so these matrices were most of a Gemma prefill.
//!
//! Per output element the arithmetic is exactly candle 0.11's `vec_dot_q5_0_q8_0`: per
//! block the whole 32-product integer dot `sumi` of the signed weights `q - 16` and the
//! activation quants, then in f32 `sum = sum + sumi · d_w · d_a`, blocks in order, no
//! fused multiply-add. The SIMD variants multiply the unsigned 5-bit `q` (0..=31) and
//! subtract `16 · Σ y` afterwards, which is the same integer; eight weight rows sit in the
//! eight lanes of a float vector, so each lane runs the scalar float sequence for its own
//! row. Hence every variant, tile shape and number of activation rows gives the same bits
//! (ragged batches rely on a row computing the same alone and in a batch). The loop bodies
//! are `grouped_tile.rs`.

use crate::dispatch::{self, Variant};
pub use crate::grouped::GROUP;
use crate::grouped::{matmul_groups, Grouped};
use crate::grouped_tile::GroupFormat;
use crate::parallel::Parallel;
use crate::q8_0::f16_to_f32;

/// A Q5_0 block as ggml stores it: f16 scale, the 32 fifth bits (bit `e` of the
/// little-endian `qh` belongs to element `e`), 32 low nibbles (element `j` in the low
/// nibble of byte `j`, element `16 + j` in its high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<Block>() == 22);

/// Values per block.
pub const QK: usize = 32;

/// One block column of a group of eight weight rows, stored together so that the kernel
/// reads the weights as one sequential stream and loads eight scales with one instruction.
/// Same 22 bytes per row-block as the GGUF layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GroupBlock {
    d: [u16; GROUP],
    qh: [u32; GROUP],
    qs: [[u8; 16]; GROUP],
}

/// A Q5_0 matrix (`n` rows of `kb` blocks) repacked for the kernel.
pub type Packed = Grouped<GroupBlock>;

impl Packed {
    /// Repacks `w`, row-major `n` rows of `kb` blocks. Panics when the length differs.
    pub fn new(w: &[Block], n: usize, kb: usize) -> Self {
        let zero = GroupBlock {
            d: [0; GROUP],
            qh: [0; GROUP],
            qs: [[0; 16]; GROUP],
        };
        Grouped::repack("q5_0", w, n, kb, zero, |gb, lane, src: &Block| {
            gb.d[lane] = src.d;
            gb.qh[lane] = u32::from_le_bytes(src.qh);
            gb.qs[lane] = src.qs;
        })
    }
}

/// Quantised activations (Q8_0 blocks, `crate::q8_0::Block`): rows of `kb` blocks, each
/// block's scale widened to f32 and the sum of its 32 quants.
pub struct Acts<'a> {
    pub blocks: &'a [crate::q8_0::Block],
    pub d: &'a [f32],
    pub sums: &'a [i32],
    pub kb: usize,
}

/// The sum of a Q8_0 block's quants, for `Acts::sums`.
pub fn quant_sum(b: &crate::q8_0::Block) -> i32 {
    b.qs.iter().map(|&q| q as i32).sum()
}

/// `out[r·n + c] = Σ_b sumi · d_w · d_a` for the `m` rows of `a`, with the variant this
/// process selected (`dispatch::selected`).
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
    assert_eq!(a.sums.len(), m * a.kb, "activation sums");
    matmul_groups(variant, w, a, m, out, par);
}

/// What Q5_0 brings to the shared bodies (`grouped_tile`): 5-bit weights, `q − 16` in the
/// definition and unsigned `q` in the SIMD dot (the bias subtracted after), and per block
/// `sum + sumi · d_w · d_a`. The shared AVX2 dot stays exact: unsigned weights are at most
/// 31, so a pair of products is at most 2 · 31 · 128 in magnitude, well inside i16.
impl GroupFormat for Acts<'_> {
    type Block = GroupBlock;

    #[inline(always)]
    unsafe fn quants(&self, k: usize) -> &[i8; 32] {
        &self.blocks.get_unchecked(k).qs
    }

    #[inline(always)]
    fn weights(gb: &GroupBlock, lane: usize) -> [i8; 32] {
        // Element e: nibble j = e % 16 of byte j (low for e < 16), bit e of qh as its 16.
        let (qs, qh) = (&gb.qs[lane], gb.qh[lane]);
        std::array::from_fn(|e| {
            let nibble = if e < 16 {
                qs[e] & 0x0F
            } else {
                qs[e - 16] >> 4
            };
            (nibble | (((qh >> e) & 1) << 4) as u8) as i8 - 16
        })
    }

    #[inline(always)]
    fn add_block(&self, acc: f32, sumi: i32, gb: &GroupBlock, lane: usize, k: usize) -> f32 {
        acc + sumi as f32 * f16_to_f32(gb.d[lane]) * self.d[k]
    }

    #[cfg(target_arch = "x86_64")]
    type Scales = std::arch::x86_64::__m256;

    /// One row-block → 32 unsigned bytes 0..=31 in element order: the nibbles (low
    /// nibbles, then high nibbles) with bit `e` of `qh` as element `e`'s 16.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn unpack(gb: &GroupBlock, lane: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let x = _mm_loadu_si128(gb.qs[lane].as_ptr().cast());
        let hi = _mm_srli_epi16(x, 4);
        let nibbles = _mm256_and_si256(_mm256_set_m128i(hi, x), _mm256_set1_epi8(0x0F));
        // Byte e takes qh's byte e / 8; then all bits but bit e % 8 are set, so the byte is
        // all ones exactly when element e's bit is.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(gb.qh[lane] as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
        _mm256_or_si256(nibbles, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
    }

    /// The eight rows' `d`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales(gb: &GroupBlock) -> Self::Scales {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(gb.d.as_ptr().cast()))
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn add_block_x8(
        &self,
        acc: std::arch::x86_64::__m256,
        dots: std::arch::x86_64::__m256i,
        dx: Self::Scales,
        k: usize,
    ) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // Σ q·y − 16·Σ y = Σ (q − 16)·y, candle's signed dot, exactly.
        let bias = _mm256_set1_epi32(16 * *self.sums.get_unchecked(k));
        let sumi = _mm256_cvtepi32_ps(_mm256_sub_epi32(dots, bias));
        let da = _mm256_set1_ps(*self.d.get_unchecked(k));
        // candle's order: (sumi · d_w) · d_a, then the add.
        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(sumi, dx), da))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_0::Block as ActBlock;
    use crate::test_support::{
        assert_every_variant_gives, assert_rows_alone_match_batch, f16_bits, serial, Lcg,
    };
    use std::ops::Range;

    fn weights(n: usize, kb: usize, seed: u64) -> Vec<Block> {
        let mut rng = Lcg(seed);
        (0..n * kb)
            .map(|_| Block {
                d: f16_bits(&mut rng),
                qh: rng.next().to_le_bytes(),
                qs: std::array::from_fn(|_| rng.next() as u8),
            })
            .collect()
    }

    struct OwnedActs {
        blocks: Vec<ActBlock>,
        d: Vec<f32>,
        sums: Vec<i32>,
    }

    fn acts(m: usize, kb: usize, seed: u64) -> OwnedActs {
        let mut rng = Lcg(seed);
        let blocks: Vec<ActBlock> = (0..m * kb)
            .map(|_| ActBlock {
                d: f16_bits(&mut rng) & 0x7fff,
                // The full i8 range, -128 included (the AVX2 path must not saturate).
                qs: std::array::from_fn(|_| rng.next() as i8),
            })
            .collect();
        let d = blocks.iter().map(|b| f16_to_f32(b.d)).collect();
        let sums = blocks.iter().map(quant_sum).collect();
        OwnedActs { blocks, d, sums }
    }

    /// candle's `vec_dot_q5_0_q8_0`, written from its definition on the unpacked blocks:
    /// element e's fifth bit is bit e of the little-endian `qh`.
    fn reference(w: &[Block], a: &OwnedActs, m: usize, n: usize, kb: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut sumf = 0f32;
                for b in 0..kb {
                    let (x, y) = (&w[c * kb + b], &a.blocks[r * kb + b]);
                    let qh = u32::from_le_bytes(x.qh);
                    let mut sumi = 0i32;
                    for e in 0..32 {
                        let nibble = if e < 16 {
                            x.qs[e] & 0x0F
                        } else {
                            x.qs[e - 16] >> 4
                        };
                        let q = nibble as i32 + 16 * ((qh >> e) & 1) as i32;
                        sumi += (q - 16) * y.qs[e] as i32;
                    }
                    sumf += sumi as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
                }
                out[r * n + c] = sumf;
            }
        }
        out
    }

    /// The kernel on activation rows `rows` of `a`.
    fn run(v: Variant, p: &Packed, a: &OwnedActs, rows: Range<usize>, par: Parallel) -> Vec<f32> {
        let kb = p.blocks_per_row();
        let ks = rows.start * kb..rows.end * kb;
        let acts = Acts {
            blocks: &a.blocks[ks.clone()],
            d: &a.d[ks.clone()],
            sums: &a.sums[ks],
            kb,
        };
        let mut out = vec![f32::NAN; rows.len() * p.rows()];
        matmul_with(v, p, &acts, rows.len(), &mut out, par);
        out
    }

    #[test]
    fn every_variant_equals_the_definition_bit_for_bit() {
        // Shapes: a partial last group (n = 13), decode (m = 1), a ragged tile tail (m = 7),
        // more rows than one chunk (m = 70), one block per row.
        for &(m, n, kb) in &[(1, 8, 2), (7, 13, 3), (70, 24, 4), (5, 3, 1), (2, 64, 20)] {
            let w = weights(n, kb, 11 + n as u64);
            let a = acts(m, kb, 5 + m as u64);
            let want = reference(&w, &a, m, n, kb);
            let p = Packed::new(&w, n, kb);
            assert_every_variant_gives(&want, &format!("m={m} n={n} kb={kb}"), |v, par| {
                run(v, &p, &a, 0..m, par)
            });
        }
    }

    #[test]
    fn extreme_quants_do_not_saturate() {
        // Every weight at 31 (q − 16 = 15) or 0 (−16) against activations at −128 / 127.
        let (m, n, kb) = (4, 8, 2);
        let w: Vec<Block> = (0..n * kb)
            .map(|i| Block {
                d: 0x3c00, // 1.0
                qh: if i % 2 == 0 { [0xff; 4] } else { [0; 4] },
                qs: if i % 2 == 0 { [0xff; 16] } else { [0; 16] },
            })
            .collect();
        let blocks: Vec<ActBlock> = (0..m * kb)
            .map(|i| ActBlock {
                d: 0x3c00,
                qs: [if i % 2 == 0 { -128 } else { 127 }; 32],
            })
            .collect();
        let a = OwnedActs {
            d: vec![1.0; m * kb],
            sums: blocks.iter().map(quant_sum).collect(),
            blocks,
        };
        let want = reference(&w, &a, m, n, kb);
        // Block 0 of every weight row is 15s, block 1 is −16s; activations alternate per
        // block the same way: 32·15·(−128) + 32·(−16)·127.
        assert_eq!(want[0], (32 * 15 * -128 + 32 * -16 * 127) as f32);
        let p = Packed::new(&w, n, kb);
        for v in dispatch::available() {
            assert_eq!(run(v, &p, &a, 0..m, &serial), want, "{v:?}");
        }
    }

    #[test]
    fn a_row_alone_equals_the_same_row_in_a_batch() {
        let (m, n, kb) = (9, 16, 5);
        let w = weights(n, kb, 3);
        let a = acts(m, kb, 4);
        let p = Packed::new(&w, n, kb);
        assert_rows_alone_match_batch(m, n, |v, rows| run(v, &p, &a, rows, &serial));
    }

    #[test]
    fn packing_keeps_every_block() {
        let (n, kb) = (11, 3);
        let w = weights(n, kb, 9);
        let p = Packed::new(&w, n, kb);
        assert_eq!(p.bytes(), 2 * kb * 8 * 22);
        for r in 0..n {
            for b in 0..kb {
                let gb = &p.groups[(r / GROUP) * kb + b];
                let (i, src) = (r % GROUP, &w[r * kb + b]);
                assert_eq!(
                    (gb.d[i], gb.qh[i].to_le_bytes(), gb.qs[i]),
                    (src.d, src.qh, src.qs)
                );
            }
        }
        // Padding rows are zero.
        assert!(p.groups[kb..].iter().all(|gb| gb.qs[3..] == [[0u8; 16]; 5]));
    }
}
