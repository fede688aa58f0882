//! Q4_1 weight × f32 activation matmul on the CPU through lem's kernel
//! (`lem_kernels::q4_1`): a GGUF's 4-bit weights multiplied as stored, with activations
//! quantised to Q8_1 as llama.cpp does.
//!
//! Activations are quantised by candle's own `BlockQ8_1::from_float` and the kernel
//! computes candle's `vec_dot_q4_1_q8_1` exactly, so the result is bit-identical to
//! candle's `QMatMul` on the same Q4_1 tensor, and a row gives the same bits alone and in
//! any batch. The weights are repacked once at load (groups of eight rows, same bytes).

use candle_core::quantized::k_quants::{BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use lem_kernels::q4_1::{self as kernel, ActBlock, Block, Packed, QK};

/// A Q4_1 weight matrix (n, k) repacked for the kernel.
pub(crate) struct PackedQ4_1 {
    w: Packed,
    k: usize,
}

impl PackedQ4_1 {
    /// Repacks a CPU Q4_1 tensor of shape (n, k), k a multiple of 32.
    pub(crate) fn new(t: &QTensor) -> candle_core::Result<Self> {
        if t.dtype() != GgmlDType::Q4_1 {
            candle_core::bail!("q4_1 matmul: a {:?} weight", t.dtype());
        }
        let (n, k) = t.shape().dims2()?;
        if !k.is_multiple_of(QK) {
            candle_core::bail!("q4_1 matmul: width {k} is not a multiple of {QK}");
        }
        let kb = k / QK;
        let data = t.data()?;
        if data.len() != n * kb * std::mem::size_of::<Block>() {
            candle_core::bail!("q4_1 matmul: {} bytes for a ({n}, {k}) weight", data.len());
        }
        // Copied out block by block: the storage's alignment is not assumed.
        let blocks: Vec<Block> = data
            .chunks_exact(std::mem::size_of::<Block>())
            .map(|b| Block {
                d: u16::from_le_bytes([b[0], b[1]]),
                m: u16::from_le_bytes([b[2], b[3]]),
                qs: b[4..20].try_into().expect("16 quant bytes"),
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
pub(crate) fn forward(w: &PackedQ4_1, x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k) = (w.rows(), w.k);
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        candle_core::bail!(
            "q4_1 matmul: input {dims:?} {:?} on {:?} against weight ({n}, {k})",
            x.dtype(),
            x.device().location()
        );
    }
    let m = x.elem_count() / k;
    let kb = k / QK;
    let x = x.contiguous()?;

    let mut qa = vec![BlockQ8_1::zeros(); m * kb];
    let mut a_d = vec![0f32; m * kb];
    let mut a_s = vec![0f32; m * kb];
    {
        let (store, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*store else {
            candle_core::bail!("q4_1 matmul: input not on the CPU");
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * k];
        let qa_ptr = SendPtr(qa.as_mut_ptr());
        let d_ptr = SendPtr(a_d.as_mut_ptr());
        let s_ptr = SendPtr(a_s.as_mut_ptr());
        let quantise = |rows: std::ops::Range<usize>| {
            let (qa_ptr, d_ptr, s_ptr) = (&qa_ptr, &d_ptr, &s_ptr);
            for r in rows {
                // SAFETY: row r's blocks and scales are written by this worker only.
                let (blocks, ds, ss) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qa_ptr.0.add(r * kb), kb),
                        std::slice::from_raw_parts_mut(d_ptr.0.add(r * kb), kb),
                        std::slice::from_raw_parts_mut(s_ptr.0.add(r * kb), kb),
                    )
                };
                BlockQ8_1::from_float(&xs[r * k..(r + 1) * k], blocks);
                // SAFETY: BlockQ8_1 is `repr(C)` { f16, f16, [i8; 32] }, ActBlock's layout.
                let blocks: &[ActBlock] =
                    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), kb) };
                for ((d, s), b) in ds.iter_mut().zip(ss.iter_mut()).zip(blocks) {
                    *d = lem_kernels::q8_0::f16_to_f32(b.d);
                    *s = lem_kernels::q8_0::f16_to_f32(b.s);
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
    let qa: &[ActBlock] = unsafe { std::slice::from_raw_parts(qa.as_ptr().cast(), qa.len()) };

    let mut out = vec![0f32; m * n];
    let a = kernel::Acts {
        blocks: qa,
        d: &a_d,
        s: &a_s,
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
        // than one chunk. Even block counts: candle's Q4_1 `vec_dot` asserts them.
        for &(m, n, k) in &[
            (1, 8, 64),
            (3, 13, 64),
            (7, 24, 192),
            (70, 20, 128),
            (2, 40, 576),
        ] {
            let w = Tensor::from_vec(rand(n * k, 7 + m as u64, 0.5), (n, k), &Device::Cpu).unwrap();
            let t = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
            let packed = PackedQ4_1::new(&t).unwrap();
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
        let err = PackedQ4_1::new(&q8).err().unwrap().to_string();
        assert!(err.contains("Q8_0"), "{err}");
        let q4 = PackedQ4_1::new(&QTensor::quantize(&w, GgmlDType::Q4_1).unwrap()).unwrap();
        let x = Tensor::zeros((1, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = forward(&q4, &x).err().unwrap().to_string();
        assert!(err.contains("against weight (4, 32)"), "{err}");
    }
}
