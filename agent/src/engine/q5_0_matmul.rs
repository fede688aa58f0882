//! Q5_0 weight × f32 activation matmul on the CPU through lem's kernel
//! (`lem_kernels::q5_0`): a GGUF's 5-bit weights multiplied as stored, with activations
//! quantised to Q8_0 as llama.cpp does.
//!
//! Activations are quantised by candle's own `BlockQ8_0::from_float` and the kernel
//! computes candle's `vec_dot_q5_0_q8_0` exactly, so the result is bit-identical to
//! candle's `QMatMul` on the same Q5_0 tensor, and a row gives the same bits alone and in
//! any batch. The weights are repacked once at load (groups of eight rows, same bytes).

use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use lem_kernels::q5_0::{self as kernel, Block, Packed, QK};

/// A Q5_0 weight matrix (n, k) repacked for the kernel.
pub(crate) struct PackedQ5_0 {
    w: Packed,
    k: usize,
}

impl PackedQ5_0 {
    /// Repacks a CPU Q5_0 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        if t.dtype() != GgmlDType::Q5_0 {
            candle_core::bail!("q5_0 matmul: a {:?} weight", t.dtype());
        }
        let (n, k) = t.shape().dims2()?;
        if !k.is_multiple_of(QK) {
            candle_core::bail!("q5_0 matmul: width {k} is not a multiple of {QK}");
        }
        let kb = k / QK;
        let data = t.data()?;
        if data.len() != n * kb * std::mem::size_of::<Block>() {
            candle_core::bail!("q5_0 matmul: {} bytes for a ({n}, {k}) weight", data.len());
        }
        // Copied out block by block: the storage's alignment is not assumed.
        let blocks: Vec<Block> = data
            .chunks_exact(std::mem::size_of::<Block>())
            .map(|b| Block {
                d: u16::from_le_bytes([b[0], b[1]]),
                qh: b[2..6].try_into().expect("4 high-bit bytes"),
                qs: b[6..22].try_into().expect("16 quant bytes"),
            })
            .collect();
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
    let (n, k) = (w.rows(), w.k);
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        candle_core::bail!(
            "q5_0 matmul: input {dims:?} {:?} on {:?} against weight ({n}, {k})",
            x.dtype(),
            x.device().location()
        );
    }
    let m = x.elem_count() / k;
    let kb = k / QK;
    let x = x.contiguous()?;

    let mut qa = vec![BlockQ8_0::zeros(); m * kb];
    let mut a_d = vec![0f32; m * kb];
    let mut a_sums = vec![0i32; m * kb];
    {
        let (store, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*store else {
            candle_core::bail!("q5_0 matmul: input not on the CPU");
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * k];
        let qa_ptr = SendPtr(qa.as_mut_ptr());
        let d_ptr = SendPtr(a_d.as_mut_ptr());
        let sum_ptr = SendPtr(a_sums.as_mut_ptr());
        let quantise = |rows: std::ops::Range<usize>| {
            let (qa_ptr, d_ptr, sum_ptr) = (&qa_ptr, &d_ptr, &sum_ptr);
            for r in rows {
                // SAFETY: row r's blocks, scales and sums are written by this worker only.
                let (blocks, ds, sums) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qa_ptr.0.add(r * kb), kb),
                        std::slice::from_raw_parts_mut(d_ptr.0.add(r * kb), kb),
                        std::slice::from_raw_parts_mut(sum_ptr.0.add(r * kb), kb),
                    )
                };
                BlockQ8_0::from_float(&xs[r * k..(r + 1) * k], blocks);
                // SAFETY: BlockQ8_0 is `repr(C)` { f16, [i8; 32] }, the kernel's Q8_0 block.
                let blocks: &[lem_kernels::q8_0::Block] =
                    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), kb) };
                for ((d, s), b) in ds.iter_mut().zip(sums.iter_mut()).zip(blocks) {
                    *d = lem_kernels::q8_0::f16_to_f32(b.d);
                    *s = kernel::quant_sum(b);
                }
            }
        };
        // A pool dispatch costs more than quantising a few rows (decode).
        if m >= 16 {
            candle_core::utils::barrier_pool().execute_chunked(m, quantise);
        } else {
            quantise(0..m);
        }
    }
    // SAFETY: as above.
    let qa: &[lem_kernels::q8_0::Block] =
        unsafe { std::slice::from_raw_parts(qa.as_ptr().cast(), qa.len()) };

    let mut out = vec![0f32; m * n];
    let a = kernel::Acts {
        blocks: qa,
        d: &a_d,
        sums: &a_sums,
        kb,
    };
    kernel::matmul(&w.w, &a, m, &mut out, &|items, f| {
        candle_core::utils::barrier_pool().execute_chunked(items, f)
    });
    let mut out_dims = dims;
    *out_dims.last_mut().expect("checked above") = n;
    Tensor::from_vec(out, out_dims, x.device())
}

struct SendPtr<T>(*mut T);
// SAFETY: pool workers write disjoint rows (see `forward`).
unsafe impl<T> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module};

    fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = lem_common::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

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
            let w = Tensor::from_vec(rand(n * k, 7 + m as u64, 0.5), (n, k), &Device::Cpu).unwrap();
            let t = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
            let packed = PackedQ5_0::new(&t).unwrap();
            let xs = rand(m * k, 3, 30.0);
            let x = Tensor::from_vec(xs.clone(), (1, m, k), &Device::Cpu).unwrap();
            let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
            let ours = flat(forward(&packed, &x).unwrap());
            let theirs = flat(QMatMul::from_qtensor(t).unwrap().forward(&x).unwrap());
            assert_eq!(ours, theirs, "m={m} n={n} k={k}");
            for r in 0..m {
                let row =
                    Tensor::from_vec(xs[r * k..(r + 1) * k].to_vec(), (1, 1, k), &Device::Cpu)
                        .unwrap();
                let alone = flat(forward(&packed, &row).unwrap());
                assert_eq!(alone, ours[r * n..(r + 1) * n], "row {r} m={m} n={n} k={k}");
            }
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
