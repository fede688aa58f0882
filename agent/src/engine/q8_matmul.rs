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
    use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};

    let (n, k) = w.shape().dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) {
        candle_core::bail!("q8_0 matmul: input {dims:?} against weight ({n}, {k})");
    }
    let m = x.elem_count() / k;
    let kb = k / QK;
    let x = x.contiguous()?;

    let data = w.data()?;
    if data.len() != n * kb * std::mem::size_of::<Block>() {
        candle_core::bail!("q8_0 matmul: {} bytes for a ({n}, {k}) weight", data.len());
    }
    if data.as_ptr().align_offset(std::mem::align_of::<Block>()) != 0 {
        candle_core::bail!("q8_0 matmul: misaligned weight storage");
    }
    // SAFETY: length and alignment checked above; every bit pattern is a valid Block.
    let qw: &[Block] = unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), n * kb) };

    let mut qa = vec![BlockQ8_0::zeros(); m * kb];
    let mut a_scales = vec![0f32; m * kb];
    {
        let (store, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*store else {
            candle_core::bail!("q8_0 matmul: input not on the CPU");
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * k];
        // Rows quantised with candle's own routine (the exact blocks its kernel would use),
        // spread over the pool: each worker owns whole rows.
        let qa_ptr = SendPtr(qa.as_mut_ptr());
        let sc_ptr = SendPtr(a_scales.as_mut_ptr());
        let quantise = |rows: std::ops::Range<usize>| {
            let (qa_ptr, sc_ptr) = (&qa_ptr, &sc_ptr);
            for r in rows {
                // SAFETY: row r's blocks and scales are written by this worker only.
                let (blocks, scales) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qa_ptr.0.add(r * kb), kb),
                        std::slice::from_raw_parts_mut(sc_ptr.0.add(r * kb), kb),
                    )
                };
                BlockQ8_0::from_float(&xs[r * k..(r + 1) * k], blocks);
                // SAFETY: BlockQ8_0 is `repr(C)` { f16, [i8; 32] }, Block's layout.
                let blocks: &[Block] =
                    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), kb) };
                for (s, b) in scales.iter_mut().zip(blocks) {
                    *s = kernel::f16_to_f32(b.d);
                }
            }
        };
        // A pool dispatch costs more than quantising a few rows (decode); the blocks are the
        // same either way.
        if m >= 16 {
            candle_core::utils::barrier_pool().execute_chunked(m, quantise);
        } else {
            quantise(0..m);
        }
    }
    // SAFETY: as above.
    let qa: &[Block] = unsafe { std::slice::from_raw_parts(qa.as_ptr().cast(), qa.len()) };

    let mut out = vec![0f32; m * n];
    let a = kernel::Acts {
        blocks: qa,
        scales: &a_scales,
        kb,
    };
    kernel::matmul_with(variant, qw, n, &a, m, &mut out, &|items, f| {
        candle_core::utils::barrier_pool().execute_chunked(items, f)
    });
    let mut out_dims = dims;
    *out_dims.last_mut().expect("checked above") = n;
    Tensor::from_vec(out, out_dims, x.device())
}

struct SendPtr<T>(*mut T);
// SAFETY: pool workers write disjoint rows (see `q8_0_matmul`).
unsafe impl<T> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = lem_common::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    fn q8(n: usize, k: usize, seed: u64) -> QTensor {
        let w = Tensor::from_vec(rand(n * k, seed, 0.5), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()
    }

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
            let w = q8(n, k, 7 + m as u64);
            let xs = rand(m * k, 3, 30.0);
            let x = Tensor::from_vec(xs.clone(), (1, m, k), &Device::Cpu).unwrap();
            let mm = QMatMul::from_qtensor(w).unwrap();
            let QMatMul::QTensor(t) = &mm else {
                panic!("expected a quantised matmul")
            };
            let theirs: Vec<f32> = mm
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for &v in &variants {
                let ours: Vec<f32> = q8_0_matmul(v, t, &x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(ours, theirs, "{v:?} m={m} n={n} k={k}");
                // Each row alone gives the same bits as in the batch.
                for r in 0..m {
                    let row =
                        Tensor::from_vec(xs[r * k..(r + 1) * k].to_vec(), (1, 1, k), &Device::Cpu)
                            .unwrap();
                    let alone: Vec<f32> = q8_0_matmul(v, t, &row)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert_eq!(
                        alone,
                        ours[r * n..(r + 1) * n],
                        "{v:?} row {r} m={m} n={n} k={k}"
                    );
                }
            }
        }
    }
}
