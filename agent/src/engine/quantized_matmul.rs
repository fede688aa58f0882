//! What the CPU quantised matmuls (`q8_matmul`, `grouped_matmul`) share around
//! their kernels: reading a stored weight's blocks, the input checks, activation rows
//! quantised over candle's thread pool, the kernel's thread pool, and the output's shape.
//! Each matmul brings only its block layout, its row quantiser and its kernel call.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};

/// x: (..., k) f32 on the CPU against a weight of `n` rows of `k` values; returns
/// (..., n). Each of x's `m` rows is quantised by candle's `quantise(values, blocks)` into
/// its `k / block_len` blocks (starting as `empty`), which are then read as the kernel's
/// block type `K`, and `widen(block)` gives each block's `SCALES` f32 scales and `SUMS`
/// i32 sums (worked out once here rather than once per weight row).
/// `kernel(blocks, scales, sums, m, out)` fills the `m × n` output. `what` names the matmul in errors ("q8_0 matmul").
///
/// # Safety
/// `K` must have `B`'s layout (both `repr(C)` with the same fields), every bit pattern
/// being a valid `K`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn quantized_matmul<
    B: Clone + Send,
    K: Sync,
    const SCALES: usize,
    const SUMS: usize,
>(
    what: &str,
    x: &Tensor,
    n: usize,
    k: usize,
    block_len: usize,
    empty: B,
    quantise: impl Fn(&[f32], &mut [B]) + Sync,
    widen: impl Fn(&K) -> ([f32; SCALES], [i32; SUMS]) + Sync,
    kernel: impl FnOnce(&[K], &[Vec<f32>; SCALES], &[Vec<i32>; SUMS], usize, &mut [f32]),
) -> candle_core::Result<Tensor> {
    assert_eq!(std::mem::size_of::<B>(), std::mem::size_of::<K>());
    assert!(std::mem::align_of::<B>() >= std::mem::align_of::<K>());
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k)
        || !k.is_multiple_of(block_len)
        || !x.device().is_cpu()
        || x.dtype() != DType::F32
    {
        candle_core::bail!(
            "{what}: input {dims:?} {:?} on {:?} against weight ({n}, {k})",
            x.dtype(),
            x.device().location()
        );
    }
    let m = x.elem_count() / k;
    let kb = k / block_len;
    let x = x.contiguous()?;

    let mut blocks = vec![empty; m * kb];
    let mut scales: [Vec<f32>; SCALES] = std::array::from_fn(|_| vec![0f32; m * kb]);
    let mut sums: [Vec<i32>; SUMS] = std::array::from_fn(|_| vec![0i32; m * kb]);
    {
        let (store, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*store else {
            candle_core::bail!("{what}: input not on the CPU");
        };
        let xs = &cpu.as_slice::<f32>()?[layout.start_offset()..][..m * k];
        let blocks_ptr = SendPtr(blocks.as_mut_ptr());
        let scale_ptrs: [SendPtr<f32>; SCALES] =
            std::array::from_fn(|i| SendPtr(scales[i].as_mut_ptr()));
        let sum_ptrs: [SendPtr<i32>; SUMS] = std::array::from_fn(|i| SendPtr(sums[i].as_mut_ptr()));
        let quantise_rows = |rows: std::ops::Range<usize>| {
            let (blocks_ptr, scale_ptrs, sum_ptrs) = (&blocks_ptr, &scale_ptrs, &sum_ptrs);
            for r in rows {
                // SAFETY: row r's blocks and scales are written by this worker only, and
                // the buffers outlive the pool call.
                let row = unsafe { std::slice::from_raw_parts_mut(blocks_ptr.0.add(r * kb), kb) };
                quantise(&xs[r * k..(r + 1) * k], row);
                // SAFETY: K has B's layout (the caller's promise).
                let row: &[K] = unsafe { std::slice::from_raw_parts(row.as_ptr().cast(), kb) };
                for (b, block) in row.iter().enumerate() {
                    let (block_scales, block_sums) = widen(block);
                    for (ptr, value) in scale_ptrs.iter().zip(block_scales) {
                        // SAFETY: as for the blocks: this row's cells, this worker only.
                        unsafe { *ptr.0.add(r * kb + b) = value };
                    }
                    for (ptr, value) in sum_ptrs.iter().zip(block_sums) {
                        // SAFETY: as for the scales.
                        unsafe { *ptr.0.add(r * kb + b) = value };
                    }
                }
            }
        };
        // A pool dispatch costs more than quantising a few rows (decode); the blocks are
        // the same either way.
        if m >= 16 {
            candle_core::utils::barrier_pool().execute_chunked(m, quantise_rows);
        } else {
            quantise_rows(0..m);
        }
    }
    // SAFETY: as above.
    let blocks: &[K] = unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), m * kb) };

    let mut out = vec![0f32; m * n];
    kernel(blocks, &scales, &sums, m, &mut out);
    let mut out_dims = dims;
    *out_dims.last_mut().expect("checked above") = n;
    Tensor::from_vec(out, out_dims, x.device())
}

/// A quantised weight `t` of `dtype`, shape (n, k) with k a multiple of `block_len`, as
/// `n × k / block_len` blocks `parse`d from its stored bytes (copied out block by block:
/// the storage's alignment is not assumed); returns them with (n, k). `what` names the
/// matmul in errors.
pub(crate) fn stored_blocks<B>(
    what: &str,
    t: &QTensor,
    dtype: GgmlDType,
    block_len: usize,
    parse: impl Fn(&[u8]) -> B,
) -> candle_core::Result<(Vec<B>, usize, usize)> {
    if t.dtype() != dtype {
        candle_core::bail!("{what}: a {:?} weight", t.dtype());
    }
    let (n, k) = t.shape().dims2()?;
    if !k.is_multiple_of(block_len) {
        candle_core::bail!("{what}: width {k} is not a multiple of {block_len}");
    }
    let data = t.data()?;
    let block_bytes = std::mem::size_of::<B>();
    if data.len() != n * (k / block_len) * block_bytes {
        candle_core::bail!("{what}: {} bytes for a ({n}, {k}) weight", data.len());
    }
    Ok((data.chunks_exact(block_bytes).map(parse).collect(), n, k))
}

/// The kernels' `Parallel`: items split over candle's CPU thread pool.
pub(crate) fn on_candle_pool(items: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    candle_core::utils::barrier_pool().execute_chunked(items, f)
}

struct SendPtr<T>(*mut T);
// SAFETY: pool workers write disjoint rows (see `quantized_matmul`).
unsafe impl<T> Sync for SendPtr<T> {}

/// What the matmuls' tests share: random weights and inputs, and the comparison with
/// candle's own `QMatMul`.
#[cfg(test)]
pub(crate) mod test_cases {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// `len` values uniform in (−scale, scale) from `seed`.
    pub(crate) fn random_f32(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = lem_common::rng::SplitMix64::new(seed);
        (0..len)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    fn flat(t: Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// A random (n, k) weight quantised to `dtype` and `m` random input rows (1, m, k),
    /// with candle's `QMatMul` result for them.
    pub(crate) struct Case {
        pub(crate) m: usize,
        pub(crate) n: usize,
        pub(crate) k: usize,
        matmul: QMatMul,
        xs: Vec<f32>,
        candle_out: Vec<f32>,
    }

    impl Case {
        pub(crate) fn new(m: usize, n: usize, k: usize, dtype: GgmlDType) -> Self {
            let w = Tensor::from_vec(random_f32(n * k, 7 + m as u64, 0.5), (n, k), &Device::Cpu)
                .unwrap();
            let matmul = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap();
            let xs = random_f32(m * k, 3, 30.0);
            let x = Tensor::from_vec(xs.clone(), (1, m, k), &Device::Cpu).unwrap();
            let candle_out = flat(matmul.forward(&x).unwrap());
            Self {
                m,
                n,
                k,
                matmul,
                xs,
                candle_out,
            }
        }

        /// The quantised weight candle multiplied by.
        pub(crate) fn weight(&self) -> &QTensor {
            match &self.matmul {
                QMatMul::QTensor(t) => t,
                _ => panic!("expected a quantised matmul"),
            }
        }

        /// `ours` on all rows gives candle's bits, and each row alone the same bits as in
        /// the batch.
        pub(crate) fn assert_same_bits_as_candle(
            &self,
            ours: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
            label: &str,
        ) {
            let (m, n, k) = (self.m, self.n, self.k);
            let x = Tensor::from_vec(self.xs.clone(), (1, m, k), &Device::Cpu).unwrap();
            let batch = flat(ours(&x).unwrap());
            assert_eq!(batch, self.candle_out, "{label} m={m} n={n} k={k}");
            for r in 0..m {
                let row = self.xs[r * k..(r + 1) * k].to_vec();
                let row = Tensor::from_vec(row, (1, 1, k), &Device::Cpu).unwrap();
                let alone = flat(ours(&row).unwrap());
                assert_eq!(
                    alone,
                    batch[r * n..(r + 1) * n],
                    "{label} row {r} m={m} n={n} k={k}"
                );
            }
        }
    }
}
