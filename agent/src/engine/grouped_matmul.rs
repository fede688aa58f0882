//! Q4_1 and Q5_0 weight × f32 activation matmuls on the CPU through lem's grouped kernels
//! (`lem_kernels::q4_1`, `lem_kernels::q5_0`): a GGUF's 4- and 5-bit weights multiplied as
//! stored, with activations quantised as llama.cpp does (Q8_1 against Q4_1, Q8_0 against
//! Q5_0).
//!
//! Activations are quantised by candle's own `BlockQ8_1::from_float` / `BlockQ8_0::from_float`
//! and the kernels compute candle's `vec_dot_q4_1_q8_1` / `vec_dot_q5_0_q8_0` exactly, so
//! the result is bit-identical to candle's `QMatMul` on the same tensor, and a row gives the
//! same bits alone and in any batch. The weights are repacked once at load (groups of eight
//! rows, same bytes).

use super::quantized_matmul::{on_candle_pool, quantized_matmul, stored_blocks};
use candle_core::quantized::k_quants::{BlockQ8_0, BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use lem_kernels::grouped::Grouped;
use lem_kernels::q8_0::f16_to_f32;
use lem_kernels::{q4_1, q5_0, q8_0};

/// A weight matrix (n, k) repacked for one of lem's grouped kernels.
pub(crate) struct Packed<G> {
    w: Grouped<G>,
    k: usize,
}

/// A Q4_1 weight repacked for `lem_kernels::q4_1`.
pub(crate) type PackedQ4_1 = Packed<q4_1::GroupBlock>;
/// A Q5_0 weight repacked for `lem_kernels::q5_0`.
pub(crate) type PackedQ5_0 = Packed<q5_0::GroupBlock>;

/// Values per block in both formats.
const QK: usize = 32;
const _: () = assert!(q4_1::QK == QK && q5_0::QK == QK);

impl<G: Copy> Packed<G> {
    /// A CPU tensor of `dtype`, shape (n, k) with k a multiple of 32: its stored blocks
    /// `parse`d and `pack`ed (n rows of k / 32 blocks). `what` names the matmul in errors.
    fn from_stored<B>(
        what: &str,
        t: &QTensor,
        dtype: GgmlDType,
        parse: impl Fn(&[u8]) -> B,
        pack: fn(&[B], usize, usize) -> Grouped<G>,
    ) -> candle_core::Result<Self> {
        let (blocks, n, k) = stored_blocks(what, t, dtype, QK, parse)?;
        Ok(Self {
            w: pack(&blocks, n, k / QK),
            k,
        })
    }

    /// Output width.
    pub(crate) fn rows(&self) -> usize {
        self.w.rows()
    }
}

impl PackedQ4_1 {
    /// Repacks a CPU Q4_1 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        let parse = |b: &[u8]| q4_1::Block {
            d: u16::from_le_bytes([b[0], b[1]]),
            m: u16::from_le_bytes([b[2], b[3]]),
            qs: b[4..20].try_into().expect("16 quant bytes"),
        };
        Self::from_stored("q4_1 matmul", t, GgmlDType::Q4_1, parse, q4_1::Packed::new)
    }

    /// x: (..., k) f32 on the CPU; returns (..., n).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let kb = self.k / QK;
        // SAFETY: candle's BlockQ8_1 is `repr(C)` { f16, f16, [i8; 32] }, ActBlock's layout.
        unsafe {
            quantized_matmul(
                "q4_1 matmul",
                x,
                self.rows(),
                self.k,
                QK,
                BlockQ8_1::zeros(),
                BlockQ8_1::from_float,
                |b: &q4_1::ActBlock| ([f16_to_f32(b.d), f16_to_f32(b.s)], []),
                |blocks, [d, s], [], m, out| {
                    let a = q4_1::Acts { blocks, d, s, kb };
                    q4_1::matmul(&self.w, &a, m, out, &on_candle_pool);
                },
            )
        }
    }
}

impl PackedQ5_0 {
    /// Repacks a CPU Q5_0 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        let parse = |b: &[u8]| q5_0::Block {
            d: u16::from_le_bytes([b[0], b[1]]),
            qh: b[2..6].try_into().expect("4 high-bit bytes"),
            qs: b[6..22].try_into().expect("16 quant bytes"),
        };
        Self::from_stored("q5_0 matmul", t, GgmlDType::Q5_0, parse, q5_0::Packed::new)
    }

    /// x: (..., k) f32 on the CPU; returns (..., n).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let kb = self.k / QK;
        // SAFETY: candle's BlockQ8_0 is `repr(C)` { f16, [i8; 32] }, the kernel's Q8_0 block.
        unsafe {
            quantized_matmul(
                "q5_0 matmul",
                x,
                self.rows(),
                self.k,
                QK,
                BlockQ8_0::zeros(),
                BlockQ8_0::from_float,
                |b: &q8_0::Block| ([f16_to_f32(b.d)], [q5_0::quant_sum(b)]),
                |blocks, [d], [sums], m, out| {
                    let a = q5_0::Acts {
                        blocks,
                        d,
                        sums,
                        kb,
                    };
                    q5_0::matmul(&self.w, &a, m, out, &on_candle_pool);
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantized_matmul::test_cases::Case;
    use candle_core::{DType, Device};

    /// Widths: a partial group (n = 13), decode (m = 1), a ragged tile tail, more rows than
    /// one chunk, and a model-sized width `k_wide`. Even block counts: candle's Q4_1 and
    /// Q5_0 `vec_dot`s assert them.
    fn shapes(k_wide: usize) -> [(usize, usize, usize); 5] {
        [
            (1, 8, 64),
            (3, 13, 64),
            (7, 24, 192),
            (70, 20, 128),
            (2, 40, k_wide),
        ]
    }

    /// `forward` after `pack` gives candle's bits for every shape, each row alone as in
    /// the batch.
    fn assert_same_bits_as_candle<P>(
        dtype: GgmlDType,
        k_wide: usize,
        pack: impl Fn(&QTensor) -> candle_core::Result<P>,
        forward: impl Fn(&P, &Tensor) -> candle_core::Result<Tensor>,
    ) {
        for (m, n, k) in shapes(k_wide) {
            let case = Case::new(m, n, k, dtype);
            let packed = pack(case.weight()).unwrap();
            case.assert_same_bits_as_candle(|x| forward(&packed, x), &format!("{dtype:?}"));
        }
    }

    /// `pack` refuses a Q8_0 weight (naming its type); `forward` refuses an input whose
    /// width is not the weight's (naming the weight's shape).
    fn assert_refuses_other_types_and_widths<P>(
        dtype: GgmlDType,
        pack: impl Fn(&QTensor) -> candle_core::Result<P>,
        forward: impl Fn(&P, &Tensor) -> candle_core::Result<Tensor>,
    ) {
        let w = Tensor::zeros((4, 32), DType::F32, &Device::Cpu).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let err = pack(&q8).err().unwrap().to_string();
        assert!(err.contains("Q8_0"), "{dtype:?}: {err}");
        let packed = pack(&QTensor::quantize(&w, dtype).unwrap()).unwrap();
        let x = Tensor::zeros((1, 64), DType::F32, &Device::Cpu).unwrap();
        let err = forward(&packed, &x).err().unwrap().to_string();
        assert!(err.contains("against weight (4, 32)"), "{dtype:?}: {err}");
    }

    #[test]
    fn q4_1_bit_identical_to_candle_for_any_row_count() {
        // 576: SmolLM2-135M's hidden width.
        assert_same_bits_as_candle(GgmlDType::Q4_1, 576, PackedQ4_1::new, PackedQ4_1::forward);
    }

    #[test]
    fn q5_0_bit_identical_to_candle_for_any_row_count() {
        // 640: Gemma-3-270M's hidden width.
        assert_same_bits_as_candle(GgmlDType::Q5_0, 640, PackedQ5_0::new, PackedQ5_0::forward);
    }

    #[test]
    fn both_refuse_other_types_and_widths() {
        assert_refuses_other_types_and_widths(
            GgmlDType::Q4_1,
            PackedQ4_1::new,
            PackedQ4_1::forward,
        );
        assert_refuses_other_types_and_widths(
            GgmlDType::Q5_0,
            PackedQ5_0::new,
            PackedQ5_0::forward,
        );
    }
}
