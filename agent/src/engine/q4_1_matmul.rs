//! Q4_1 weight × f32 activation matmul on the CPU through lem's kernel
//! (`lem_kernels::q4_1`): a GGUF's 4-bit weights multiplied as stored, with activations
//! quantised to Q8_1 as llama.cpp does.
//!
//! Activations are quantised by candle's own `BlockQ8_1::from_float` and the kernel
//! computes candle's `vec_dot_q4_1_q8_1` exactly, so the result is bit-identical to
//! candle's `QMatMul` on the same Q4_1 tensor, and a row gives the same bits alone and in
//! any batch. The weights are repacked once at load (groups of eight rows, same bytes).

use super::quantized_matmul::{on_candle_pool, quantized_matmul, stored_blocks};
use candle_core::quantized::k_quants::{BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use lem_kernels::q4_1::{self as kernel, ActBlock, Block, Packed, QK};
use lem_kernels::q8_0::f16_to_f32;

/// A Q4_1 weight matrix (n, k) repacked for the kernel.
pub(crate) struct PackedQ4_1 {
    w: Packed,
    k: usize,
}

impl PackedQ4_1 {
    /// Repacks a CPU Q4_1 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        let (blocks, n, k) = stored_blocks("q4_1 matmul", t, GgmlDType::Q4_1, QK, |b| Block {
            d: u16::from_le_bytes([b[0], b[1]]),
            m: u16::from_le_bytes([b[2], b[3]]),
            qs: b[4..20].try_into().expect("16 quant bytes"),
        })?;
        let kb = k / QK;
        Ok(Self {
            w: Packed::new(&blocks, n, kb),
            k,
        })
    }

    /// Output width.
    pub(crate) fn rows(&self) -> usize {
        self.w.rows()
    }
}

/// x: (..., k) f32 on the CPU; returns (..., n).
pub(crate) fn forward(w: &PackedQ4_1, x: &Tensor) -> candle_core::Result<Tensor> {
    let kb = w.k / QK;
    // SAFETY: candle's BlockQ8_1 is `repr(C)` { f16, f16, [i8; 32] }, ActBlock's layout.
    unsafe {
        quantized_matmul(
            "q4_1 matmul",
            x,
            w.rows(),
            w.k,
            QK,
            BlockQ8_1::zeros(),
            BlockQ8_1::from_float,
            |b: &ActBlock| ([f16_to_f32(b.d), f16_to_f32(b.s)], []),
            |blocks, [d, s], [], m, out| {
                let a = kernel::Acts { blocks, d, s, kb };
                kernel::matmul(&w.w, &a, m, out, &on_candle_pool);
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantized_matmul::test_cases::Case;
    use candle_core::Device;

    #[test]
    fn bit_identical_to_candle_for_any_row_count() {
        // Widths: a partial group (n = 13), decode (m = 1), a ragged tile tail, more rows
        // than one chunk. Even block counts: candle's Q4_1 `vec_dot` asserts them.
        for &(m, n, k) in &[
            (1, 8, 64),
            (3, 13, 64),
            (7, 24, 192),
            (70, 20, 128),
            (2, 40, 576),
        ] {
            let case = Case::new(m, n, k, GgmlDType::Q4_1);
            let packed = PackedQ4_1::new(case.weight()).unwrap();
            case.assert_same_bits_as_candle(|x| forward(&packed, x), "q4_1");
        }
    }
    #[test]
    fn refuses_other_types_and_widths() {
        let w = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let err = PackedQ4_1::new(&q8).err().unwrap().to_string();
        assert!(err.contains("Q8_0"), "{err}");
        let q4 = PackedQ4_1::new(&QTensor::quantize(&w, GgmlDType::Q4_1).unwrap()).unwrap();
        let x = Tensor::zeros((1, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = forward(&q4, &x).err().unwrap().to_string();
        assert!(err.contains("against weight (4, 32)"), "{err}");
    }
}
