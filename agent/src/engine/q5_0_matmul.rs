//! Q5_0 weight × f32 activation matmul on the CPU through lem's kernel
//! (`lem_kernels::q5_0`): a GGUF's 5-bit weights multiplied as stored, with activations
//! quantised to Q8_0 as llama.cpp does.
//!
//! Activations are quantised by candle's own `BlockQ8_0::from_float` and the kernel
//! computes candle's `vec_dot_q5_0_q8_0` exactly, so the result is bit-identical to
//! candle's `QMatMul` on the same Q5_0 tensor, and a row gives the same bits alone and in
//! any batch. The weights are repacked once at load (groups of eight rows, same bytes).

use super::quantized_matmul::{on_candle_pool, quantized_matmul, stored_blocks};
use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use lem_kernels::q5_0::{self as kernel, Block, Packed, QK};
use lem_kernels::q8_0::{f16_to_f32, Block as ActBlock};

/// A Q5_0 weight matrix (n, k) repacked for the kernel.
pub(crate) struct PackedQ5_0 {
    w: Packed,
    k: usize,
}

impl PackedQ5_0 {
    /// Repacks a CPU Q5_0 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        let (blocks, n, k) = stored_blocks("q5_0 matmul", t, GgmlDType::Q5_0, QK, |b| Block {
            d: u16::from_le_bytes([b[0], b[1]]),
            qh: b[2..6].try_into().expect("4 high-bit bytes"),
            qs: b[6..22].try_into().expect("16 quant bytes"),
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
pub(crate) fn forward(w: &PackedQ5_0, x: &Tensor) -> candle_core::Result<Tensor> {
    let kb = w.k / QK;
    // SAFETY: candle's BlockQ8_0 is `repr(C)` { f16, [i8; 32] }, the kernel's Q8_0 block.
    unsafe {
        quantized_matmul(
            "q5_0 matmul",
            x,
            w.rows(),
            w.k,
            QK,
            BlockQ8_0::zeros(),
            BlockQ8_0::from_float,
            |b: &ActBlock| ([f16_to_f32(b.d)], [kernel::quant_sum(b)]),
            |blocks, [d], [sums], m, out| {
                let a = kernel::Acts {
                    blocks,
                    d,
                    sums,
                    kb,
                };
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
        // than one chunk. Even block counts: candle's Q5_0 `vec_dot` asserts them.
        for &(m, n, k) in &[
            (1, 8, 64),
            (3, 13, 64),
            (7, 24, 192),
            (70, 20, 128),
            (2, 40, 640),
        ] {
            let case = Case::new(m, n, k, GgmlDType::Q5_0);
            let packed = PackedQ5_0::new(case.weight()).unwrap();
            case.assert_same_bits_as_candle(|x| forward(&packed, x), "q5_0");
        }
    }

    #[test]
    fn refuses_other_types_and_widths() {
        let w = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let err = PackedQ5_0::new(&q8).err().unwrap().to_string();
        assert!(err.contains("Q8_0"), "{err}");
        let q5 = PackedQ5_0::new(&QTensor::quantize(&w, GgmlDType::Q5_0).unwrap()).unwrap();
        let x = Tensor::zeros((1, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = forward(&q5, &x).err().unwrap().to_string();
        assert!(err.contains("against weight (4, 32)"), "{err}");
    }
}
