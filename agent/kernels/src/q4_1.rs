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
//! on a row computing the same alone and in a batch). The loop bodies are `grouped_tile.rs`.

use crate::dispatch::{self, Variant};
pub use crate::grouped::GROUP;
use crate::grouped::{matmul_groups, Grouped};
use crate::grouped_tile::GroupFormat;
use crate::parallel::Parallel;
use crate::q8_0::f16_to_f32;

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
    matmul_groups(variant, w, a, m, out, par);
}

/// What Q4_1 brings to the shared bodies (`grouped_tile`): unsigned 4-bit weights, and per
/// block `sum + (sumi · d_w · d_a + m_w · s_a)`.
impl GroupFormat for Acts<'_> {
    type Block = GroupBlock;

    #[inline(always)]
    unsafe fn quants(&self, k: usize) -> &[i8; 32] {
        &self.blocks.get_unchecked(k).qs
    }

    #[inline(always)]
    fn weights(gb: &GroupBlock, lane: usize) -> [i8; 32] {
        // Element j in the low nibble of byte j, element 16 + j in its high nibble.
        let qs = &gb.qs[lane];
        std::array::from_fn(|e| if e < 16 { qs[e] & 0x0F } else { qs[e - 16] >> 4 } as i8)
    }

    #[inline(always)]
    fn add_block(&self, acc: f32, sumi: i32, gb: &GroupBlock, lane: usize, k: usize) -> f32 {
        let t = sumi as f32 * f16_to_f32(gb.d[lane]) * self.d[k];
        acc + (t + f16_to_f32(gb.m[lane]) * self.s[k])
    }

    #[cfg(target_arch = "x86_64")]
    type Scales = [std::arch::x86_64::__m256; 2];

    /// 16 bytes of nibbles → 32 bytes 0..15 in element order (low nibbles, then high).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn unpack(gb: &GroupBlock, lane: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let x = _mm_loadu_si128(gb.qs[lane].as_ptr().cast());
        let hi = _mm_srli_epi16(x, 4);
        _mm256_and_si256(_mm256_set_m128i(hi, x), _mm256_set1_epi8(0x0F))
    }

    /// The eight rows' `d` and `m`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales(gb: &GroupBlock) -> Self::Scales {
        use std::arch::x86_64::*;
        [
            _mm256_cvtph_ps(_mm_loadu_si128(gb.d.as_ptr().cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(gb.m.as_ptr().cast())),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn add_block_x8(
        &self,
        acc: std::arch::x86_64::__m256,
        dots: std::arch::x86_64::__m256i,
        [dx, mx]: Self::Scales,
        k: usize,
    ) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let sumi = _mm256_cvtepi32_ps(dots);
        let da = _mm256_set1_ps(*self.d.get_unchecked(k));
        let sa = _mm256_set1_ps(*self.s.get_unchecked(k));
        // candle's order: (sumi · d_w) · d_a + m_w · s_a, then the add.
        let t = _mm256_mul_ps(_mm256_mul_ps(sumi, dx), da);
        _mm256_add_ps(acc, _mm256_add_ps(t, _mm256_mul_ps(mx, sa)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        assert_every_variant_gives, assert_rows_alone_match_batch, f16_bits, serial, Lcg,
    };
    use std::ops::Range;

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

    /// The kernel on activation rows `rows` of `a`.
    fn run(v: Variant, p: &Packed, a: &OwnedActs, rows: Range<usize>, par: Parallel) -> Vec<f32> {
        let kb = p.blocks_per_row();
        let ks = rows.start * kb..rows.end * kb;
        let acts = Acts {
            blocks: &a.blocks[ks.clone()],
            d: &a.d[ks.clone()],
            s: &a.s[ks],
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
        for &(m, n, kb) in &[(1, 8, 2), (7, 13, 3), (70, 24, 4), (5, 3, 1), (2, 64, 18)] {
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
