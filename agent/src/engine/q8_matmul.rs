//! Q8_0 weight × f32 activation matmul on the CPU through lem's tiled AVX2 kernel
//! (`lem_kernels::q8_0`).
//!
//! candle 0.11's x86 path computes every output element as its own `vec_dot` (one block at a
//! time, one accumulator): each weight block is reloaded and its scale re-widened once per
//! activation row, and the single FMA chain leaves the core waiting on latency. The tiled
//! kernel shares loads across a tile of weight rows × activation rows and keeps a dozen
//! accumulators in flight: ~3× candle's throughput on prompt-sized inputs.
//!
//! The arithmetic of each output element is exactly candle's `vec_dot_q8_0_q8_0`: activations
//! quantised by candle's own `BlockQ8_0::from_float`, per block `|w|` times `sign(a, w)` with
//! `maddubs`/`madd`, widened to f32, scaled by `f32(d_w) · f32(d_a)` with one FMA into eight
//! lanes in block order, then the same horizontal sum. So results are bit-identical to
//! candle's kernel and to themselves whatever the number of rows or the tile a row lands
//! in: a prompt computes the same bits alone and in any batch, in prefill and decode.

use super::quantized_matmul::{on_candle_pool, quantized_matmul};
use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use lem_kernels::q8_0::{self as kernel, Block, QK};

/// `w.forward(x)`, through the tiled kernel when `w` is a Q8_0 matrix on the CPU and the
/// machine has AVX2 and FMA; candle's own path otherwise (other types, devices, CPUs).
pub(crate) fn forward(w: &QMatMul, x: &Tensor) -> candle_core::Result<Tensor> {
    match w {
        QMatMul::QTensor(t) if usable(t, x) => q8_0_matmul(lem_kernels::dispatch::selected(), t, x),
        _ => w.forward(x),
    }
}

fn usable(t: &QTensor, x: &Tensor) -> bool {
    t.dtype() == GgmlDType::Q8_0
        && x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && t.shape().dims().len() == 2
        && t.shape().dims()[1].is_multiple_of(QK)
        && kernel::available()
}

/// x: (..., k) f32; w: (n, k) Q8_0. Returns (..., n), computed by the kernel `variant`.
fn q8_0_matmul(
    variant: lem_kernels::dispatch::Variant,
    w: &QTensor,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    let (n, k) = w.shape().dims2()?;
    let kb = k / QK;
    let data = w.data()?;
    if data.len() != n * kb * std::mem::size_of::<Block>() {
        candle_core::bail!("q8_0 matmul: {} bytes for a ({n}, {k}) weight", data.len());
    }
    if data.as_ptr().align_offset(std::mem::align_of::<Block>()) != 0 {
        candle_core::bail!("q8_0 matmul: misaligned weight storage");
    }
    // SAFETY: length and alignment checked above; every bit pattern is a valid Block.
    let qw: &[Block] = unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), n * kb) };

    // Rows quantised with candle's own routine: the exact blocks its kernel would use.
    // SAFETY: candle's BlockQ8_0 is `repr(C)` { f16, [i8; 32] }, Block's layout.
    unsafe {
        quantized_matmul(
            "q8_0 matmul",
            x,
            n,
            k,
            QK,
            BlockQ8_0::zeros(),
            BlockQ8_0::from_float,
            |b: &Block| ([kernel::f16_to_f32(b.d)], []),
            |blocks, [scales], [], m, out| {
                let a = kernel::Acts { blocks, scales, kb };
                kernel::matmul_with(variant, qw, n, &a, m, out, &on_candle_pool);
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
    fn f16_widening_matches_candle() {
        // One Q8_0 block per f16 bit pattern, all quants 1: candle's dequantisation gives
        // f32(d) exactly. Infinities and NaNs are left out (never valid scales).
        let patterns: Vec<u16> = (0..=u16::MAX)
            .filter(|b| (b >> 10) & 0x1f != 0x1f)
            .collect();
        let mut bytes = Vec::with_capacity(patterns.len() * 34);
        for &b in &patterns {
            bytes.extend_from_slice(&b.to_le_bytes());
            bytes.extend_from_slice(&[1u8; 32]);
        }
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Owned(bytes),
            &Device::Cpu,
            GgmlDType::Q8_0,
        )
        .unwrap();
        let t = QTensor::new(storage, (patterns.len(), 32)).unwrap();
        let deq: Vec<Vec<f32>> = t.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
        for (row, &b) in deq.iter().zip(&patterns) {
            assert_eq!(
                row[0].to_bits(),
                kernel::f16_to_f32(b).to_bits(),
                "{b:#06x}"
            );
        }
    }

    #[test]
    fn bit_identical_to_candle_for_any_row_count() {
        // Every SIMD variant this CPU runs (AVX2; AVX-512 VNNI where present).
        let variants: Vec<_> = lem_kernels::dispatch::available()
            .into_iter()
            .filter(|&v| kernel::variant_runs(v))
            .collect();
        if variants.is_empty() {
            eprintln!("SKIPPED: no AVX2/FMA");
            return;
        }
        // Widths: tiles, a partial weight group (n = 6), the decode case (m = 1), a row
        // count past one chunk with a ragged tail.
        for &(m, n, k) in &[
            (1, 8, 64),
            (3, 6, 32),
            (7, 12, 96),
            (70, 20, 128),
            (2, 4, 256),
        ] {
            let case = Case::new(m, n, k, GgmlDType::Q8_0);
            for &v in &variants {
                let label = format!("{v:?}");
                case.assert_same_bits_as_candle(|x| q8_0_matmul(v, case.weight(), x), &label);
            }
        }
    }
}
